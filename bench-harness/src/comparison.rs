//! `run --compare-raw`: the same workload through the client library and then raw
//! ([`crate::raw`]) against the same broker in one session, written as one JSON report with
//! both runs and the library/raw ratio of every metric, and printed as three columns plus
//! the ratio.
//!
//! Raw mode drives the broker with pre-built batches and in-place fetch decoding: what the
//! broker takes when the client is not the limit. The ratio says how much of that an
//! application gets through the library (issue 10's targets are such ratios). Raw mode runs
//! unkeyed, max-rate workloads only; for the others `--compare-raw` is refused with the reason.

use serde::{Deserialize, Serialize};

use crate::report::{fmt, metrics, Report, REPORT_VERSION};
use crate::runner::Results;
use crate::workload::{ClientKind, Workload};

pub const KIND: &str = "compare-raw";

/// One metric of both runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub metric: String,
    pub library: f64,
    pub raw: f64,
    /// `library / raw`; absent when raw is 0.
    pub library_over_raw: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawComparison {
    pub report_version: u32,
    /// "compare-raw".
    pub kind: String,
    pub library: Report,
    pub raw: Report,
    /// Every metric both runs have, in display order.
    pub ratios: Vec<Ratio>,
}

/// The workload as the library run uses it (`client = "library"`) and as the raw run does;
/// an error naming why when the workload cannot run raw.
pub fn variants(w: &Workload) -> Result<(Workload, Workload), String> {
    let mut library = w.clone();
    library.client = ClientKind::Library;
    let mut raw = w.clone();
    raw.client = ClientKind::Raw;
    raw.validate()
        .map_err(|e| format!("--compare-raw: workload {} cannot run raw: {e}", w.name))?;
    Ok((library, raw))
}

/// The throughput that sums a run up: produce and consume bytes per second (a backlog
/// workload's build and drain rates).
pub fn headline(r: &Results) -> Vec<(&'static str, f64)> {
    match &r.backlog {
        Some(b) => vec![
            ("backlog build MB/s", b.build_bytes_per_s / 1e6),
            ("backlog drain MB/s", b.drain_bytes_per_s / 1e6),
        ],
        None => vec![
            ("produce MB/s", r.produce_bytes_per_s / 1e6),
            ("consume MB/s", r.consume_bytes_per_s / 1e6),
        ],
    }
}

pub fn compare(library: Report, raw: Report) -> RawComparison {
    let raw_metrics = metrics(&raw.results);
    let ratios = metrics(&library.results)
        .into_iter()
        .filter_map(|(name, l)| {
            let r = raw_metrics.iter().find(|(n, _)| *n == name)?.1;
            Some(Ratio {
                metric: name.to_owned(),
                library: l,
                raw: r,
                library_over_raw: (r != 0.0).then(|| l / r),
            })
        })
        .collect();
    RawComparison { report_version: REPORT_VERSION, kind: KIND.into(), library, raw, ratios }
}

/// Library, raw and library/raw per metric, the count checks of both runs, and one line of
/// headline ratios.
pub fn table(c: &RawComparison) -> String {
    let mut out = format!(
        "workload {}: library and raw against the same broker\n{:<22} {:>14} {:>14} {:>12}\n",
        c.library.workload.name, "", "library", "raw", "library/raw"
    );
    for r in &c.ratios {
        let ratio = r.library_over_raw.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
        out.push_str(&format!(
            "  {:<20} {:>14} {:>14} {:>12}\n",
            r.metric,
            fmt(r.library),
            fmt(r.raw),
            ratio
        ));
    }
    for (label, rep) in [("library", &c.library), ("raw", &c.raw)] {
        let res = &rep.results;
        out.push_str(&format!(
            "  {label}: {} sent, {} acked, {} consumed ({} distinct), counts {}\n",
            res.sent,
            res.acked,
            res.consumed,
            res.verify.unique,
            if res.counts_ok { "OK".to_owned() } else { res.problems.join("; ") }
        ));
    }
    let line: Vec<String> = headline(&c.library.results)
        .iter()
        .zip(headline(&c.raw.results))
        .filter(|((_, l), (_, r))| *l > 0.0 || r > &0.0)
        .map(|((name, l), (_, r))| {
            let ratio = if r > 0.0 { format!("{:.2}", l / r) } else { "-".into() };
            format!("{name} {} / {} = {ratio}", fmt(*l), fmt(r))
        })
        .collect();
    out.push_str(&format!("library/raw: {}\n", line.join(", ")));
    out
}

pub fn write(c: &RawComparison, path: &std::path::Path) -> Result<(), String> {
    crate::report::write_json(c, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::report;

    #[test]
    fn ratios_of_every_shared_metric_and_a_headline_line() {
        let mut lib = report(700.0);
        lib.results.produce_bytes_per_s = 70e6;
        let mut raw = report(1000.0);
        raw.results.produce_bytes_per_s = 100e6;
        raw.workload.client = ClientKind::Raw;
        let c = compare(lib, raw);
        let p = c.ratios.iter().find(|r| r.metric == "produce msg/s").unwrap();
        assert_eq!((p.library, p.raw), (700.0, 1000.0));
        assert!((p.library_over_raw.unwrap() - 0.7).abs() < 1e-9);
        let consume = c.ratios.iter().find(|r| r.metric == "consume MB/s").unwrap();
        assert_eq!(consume.library_over_raw, None, "raw 0: no ratio");
        let t = table(&c);
        assert!(t.contains("library/raw: produce MB/s 70.00 / 100 = 0.70"), "{t}");
        let line = t.lines().find(|l| l.trim_start().starts_with("produce msg/s")).unwrap();
        assert!(line.contains("700") && line.contains("1000") && line.ends_with("0.70"), "{t}");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["kind"], "compare-raw");
        assert!(v["library"]["results"].is_object() && v["raw"]["results"].is_object());
    }

    #[test]
    fn a_workload_raw_mode_cannot_run_is_refused_with_the_reason() {
        let keyed = Workload::parse(
            "name = \"k\"\ntopics = 1\nqueues_per_topic = 1\nmessage_size_bytes = 64\n\
             producers = 1\nconsumers = 0\nduration_s = 1\nkey_distribution = \"random\"\n\
             key_count = 3\n",
            &[],
        )
        .unwrap();
        let e = variants(&keyed).unwrap_err();
        assert!(e.contains("workload k cannot run raw") && e.contains("unkeyed"), "{e}");
        let plain = Workload { key_distribution: crate::workload::KeyDistribution::None, ..keyed };
        let (l, r) = variants(&plain).unwrap();
        assert_eq!((l.client, r.client), (ClientKind::Library, ClientKind::Raw));
    }
}
