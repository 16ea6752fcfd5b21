//! `ringmq-bench scale WORKLOAD --counts 1,2,4,8`: the workload once per count of producer
//! and/or consumer threads (each its own `Client`), against one broker in one session, and
//! one JSON report with a row per run (throughput, ack and end-to-end p50/p99) plus every
//! run's full report. With `--compare-raw` each count runs through the library and then raw.

use serde::{Deserialize, Serialize};

use crate::comparison::headline;
use crate::report::{fmt, Report, REPORT_VERSION};
use crate::workload::{ClientKind, Workload};

pub const KIND: &str = "scale";

/// The most threads of one kind a scale run may ask for.
pub const MAX_COUNT: u32 = 1024;

/// Which thread counts `--counts` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Vary {
    /// Producers, and consumers when the workload has any.
    Both,
    Producers,
    Consumers,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRow {
    pub count: u32,
    pub client: ClientKind,
    pub producers: u32,
    pub consumers: u32,
    /// Produce and consume rates (a backlog workload's build and drain rates).
    pub produce_mb_per_s: f64,
    pub produce_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub ack_p50_us: f64,
    pub ack_p99_us: f64,
    pub e2e_p50_us: f64,
    pub e2e_p99_us: f64,
    pub counts_ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleReport {
    pub report_version: u32,
    /// "scale".
    pub kind: String,
    pub workload: String,
    pub vary: Vary,
    pub counts: Vec<u32>,
    /// One per run, in run order (per count: library, then raw with `--compare-raw`).
    pub rows: Vec<ScaleRow>,
    /// Every run's full report, in the order of `rows`.
    pub runs: Vec<Report>,
}

/// `"1,2,4,8"` as counts: each in `1..=MAX_COUNT`, at least one.
pub fn parse_counts(text: &str) -> Result<Vec<u32>, String> {
    let counts = text
        .split(',')
        .map(|c| {
            let n: u32 = c.trim().parse().map_err(|_| format!("--counts: {c:?} is not a count"))?;
            if !(1..=MAX_COUNT).contains(&n) {
                return Err(format!("--counts: {n} is not in 1..={MAX_COUNT}"));
            }
            Ok(n)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if counts.is_empty() {
        return Err("--counts needs at least one count".into());
    }
    Ok(counts)
}

/// `w` with `count` threads of the kinds `vary` names.
pub fn at_count(w: &Workload, vary: Vary, count: u32) -> Result<Workload, String> {
    let mut v = w.clone();
    match vary {
        Vary::Both => {
            v.producers = count;
            if v.consumers > 0 {
                v.consumers = count;
            }
        }
        Vary::Producers => v.producers = count,
        Vary::Consumers => {
            if w.consumers == 0 {
                return Err(format!(
                    "workload {} has no consumers to scale (set --consumers or vary producers)",
                    w.name
                ));
            }
            v.consumers = count;
        }
    }
    v.validate().map_err(|e| format!("workload {} at count {count}: {e}", w.name))?;
    Ok(v)
}

pub fn row(count: u32, report: &Report) -> ScaleRow {
    let r = &report.results;
    let h = headline(r);
    let (produce_msgs_per_s, consume_msgs_per_s) = match &r.backlog {
        Some(b) => {
            let build = if b.build_s > 0.0 { b.messages as f64 / b.build_s } else { 0.0 };
            (build, b.drain_msgs_per_s)
        }
        None => (r.produce_msgs_per_s, r.consume_msgs_per_s),
    };
    ScaleRow {
        count,
        client: report.workload.client,
        producers: report.workload.producers,
        consumers: report.workload.consumers,
        produce_mb_per_s: h[0].1,
        produce_msgs_per_s,
        consume_mb_per_s: h[1].1,
        consume_msgs_per_s,
        ack_p50_us: r.ack_latency.p50_us,
        ack_p99_us: r.ack_latency.p99_us,
        e2e_p50_us: r.e2e_latency.p50_us,
        e2e_p99_us: r.e2e_latency.p99_us,
        counts_ok: r.counts_ok,
    }
}

pub fn report(w: &Workload, vary: Vary, counts: Vec<u32>, runs: Vec<(u32, Report)>) -> ScaleReport {
    ScaleReport {
        report_version: REPORT_VERSION,
        kind: KIND.into(),
        workload: w.name.clone(),
        vary,
        counts,
        rows: runs.iter().map(|(c, r)| row(*c, r)).collect(),
        runs: runs.into_iter().map(|(_, r)| r).collect(),
    }
}

/// A Markdown table, one row per run.
pub fn table(s: &ScaleReport) -> String {
    let mut out = format!(
        "workload {} scaled over {:?} ({} runs)\n\
         | count | client | producers | consumers | produce MB/s | produce msg/s | consume MB/s \
         | consume msg/s | ack p50 / p99 (us) | e2e p50 / p99 (us) | counts |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        s.workload,
        s.vary,
        s.rows.len()
    );
    for r in &s.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} |\n",
            r.count,
            match r.client {
                ClientKind::Library => "library",
                ClientKind::Raw => "raw",
            },
            r.producers,
            r.consumers,
            fmt(r.produce_mb_per_s),
            fmt(r.produce_msgs_per_s),
            fmt(r.consume_mb_per_s),
            fmt(r.consume_msgs_per_s),
            fmt(r.ack_p50_us),
            fmt(r.ack_p99_us),
            fmt(r.e2e_p50_us),
            fmt(r.e2e_p99_us),
            if r.counts_ok { "OK" } else { "**FAILED**" },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::report as one_report;

    #[test]
    fn counts_parse_and_bad_ones_are_clear_errors() {
        assert_eq!(parse_counts("1,2, 4,8").unwrap(), vec![1, 2, 4, 8]);
        assert!(parse_counts("1,x").unwrap_err().contains("\"x\""));
        assert!(parse_counts("0").unwrap_err().contains("1..=1024"));
        assert!(parse_counts("").is_err());
    }

    #[test]
    fn counts_set_the_threads_the_vary_names() {
        let w = Workload::parse(
            "name = \"t\"\ntopics = 1\nqueues_per_topic = 4\nmessage_size_bytes = 64\n\
             producers = 2\nconsumers = 1\nduration_s = 1\n",
            &[],
        )
        .unwrap();
        let b = at_count(&w, Vary::Both, 4).unwrap();
        assert_eq!((b.producers, b.consumers), (4, 4));
        let p = at_count(&w, Vary::Producers, 8).unwrap();
        assert_eq!((p.producers, p.consumers), (8, 1));
        let c = at_count(&w, Vary::Consumers, 2).unwrap();
        assert_eq!((c.producers, c.consumers), (2, 2));
        let produce_only = Workload { consumers: 0, ..w };
        assert_eq!(at_count(&produce_only, Vary::Both, 2).unwrap().consumers, 0);
        assert!(at_count(&produce_only, Vary::Consumers, 2).unwrap_err().contains("no consumers"));
    }

    #[test]
    fn one_row_per_run_in_the_report_and_the_table() {
        let mut a = one_report(1000.0);
        a.results.ack_latency.p50_us = 40.0;
        let mut b = one_report(1800.0);
        b.workload.producers = 2;
        b.results.counts_ok = false;
        let w = a.workload.clone();
        let s = report(&w, Vary::Both, vec![1, 2], vec![(1, a), (2, b)]);
        assert_eq!(s.rows.len(), 2);
        assert_eq!((s.rows[0].count, s.rows[0].produce_msgs_per_s), (1, 1000.0));
        assert_eq!((s.rows[1].producers, s.rows[1].counts_ok), (2, false));
        let t = table(&s);
        let lines: Vec<&str> =
            t.lines().filter(|l| l.starts_with("| 1 ") || l.starts_with("| 2 ")).collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[0].contains("| 1000 |") && lines[0].contains("40.00 / 100"), "{t}");
        assert!(lines[1].contains("**FAILED**"), "{t}");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["kind"], "scale");
        assert_eq!(v["runs"].as_array().unwrap().len(), 2);
        assert_eq!(v["rows"][1]["producers"], 2);
    }
}
