//! What the spawned broker did during one run: its counters (every `*_total` series of its
//! metrics endpoint, and the `_count` and `_sum` of its histograms), summed over shards, read
//! right before and right after the run. The report keeps the differences
//! (`Results::broker_counters`): bytes fetched and prefetched, chunk cache hits and misses,
//! fsyncs and their time, index room waits. They span the whole run: topic setup and warm-up
//! included.

use std::collections::BTreeMap;

/// Series kept at most: a broker's page has a fixed set of counters (a few per shard, by
/// error code); more than this means the page is not one.
const MAX_SERIES: usize = 4096;

/// Counter values by series: the metric's name with its labels other than `shard`.
pub type Counters = BTreeMap<String, f64>;

/// The samples of a metrics page (Prometheus text format): (metric name, the labels between
/// its braces or "", value). Comments and lines without a value are skipped.
pub fn samples(page: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    page.lines().filter(|l| !l.starts_with('#')).filter_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let value = value.parse::<f64>().ok()?;
        let name = series.split('{').next().unwrap_or(series);
        let labels = series[name.len()..].strip_prefix('{').and_then(|l| l.strip_suffix('}'));
        Some((name, labels.unwrap_or(""), value))
    })
}

/// Every counter of a metrics page, summed over shards.
pub fn parse(page: &str) -> Counters {
    let mut out = Counters::new();
    for (name, labels, value) in samples(page) {
        if !(name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_sum")) {
            continue;
        }
        let kept: Vec<_> = split_labels(labels).filter(|l| !l.starts_with("shard=")).collect();
        let key = match kept.is_empty() {
            true => name.to_owned(),
            false => format!("{name}{{{}}}", kept.join(",")),
        };
        if out.len() < MAX_SERIES || out.contains_key(&key) {
            *out.entry(key).or_insert(0.0) += value;
        }
    }
    out
}

/// A label list's `name="value"` pairs (a value may hold commas, and `\"` inside quotes).
fn split_labels(labels: &str) -> impl Iterator<Item = &str> {
    let mut rest = labels;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (mut quoted, mut escaped) = (false, false);
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                let at_comma = c == ',' && !quoted;
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => quoted = !quoted,
                    _ => {}
                }
                at_comma
            })
            .map_or(rest.len(), |(i, _)| i);
        let (pair, tail) = rest.split_at(end);
        rest = tail.strip_prefix(',').unwrap_or(tail);
        Some(pair)
    })
}

/// `after - before` for every series of `after` that changed (one missing before counts from
/// zero: it appeared during the run).
pub fn delta(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// The broker's counters now, or None when the endpoint did not answer.
pub fn read(metrics_url: &str) -> Option<Counters> {
    crate::lag::get(metrics_url).ok().map(|page| parse(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP ringmq_fetch_bytes_total Bytes fetched
# TYPE ringmq_fetch_bytes_total counter
ringmq_fetch_bytes_total{shard="0"} 100
ringmq_fetch_bytes_total{shard="1"} 50
ringmq_errors_total{shard="0",code="DISK_FULL"} 2
ringmq_errors_total{shard="1",code="DISK_FULL"} 1
ringmq_errors_total{code="NOT_LEADER",shard="1"} 4
ringmq_fsync_latency_seconds_bucket{shard="0",le="0.001"} 7
ringmq_fsync_latency_seconds_sum{shard="0"} 0.25
ringmq_fsync_latency_seconds_count{shard="0"} 9
ringmq_group_lag_messages{group="a,b",shard="0"} 12
ringmq_odd_total{topic="x\",y",shard="0"} 3
ringmq_requests_total 5
not a line
"#;

    #[test]
    fn counters_are_summed_over_shards_and_keep_their_other_labels() {
        let c = parse(PAGE);
        let want: Counters = [
            ("ringmq_fetch_bytes_total", 150.0),
            ("ringmq_errors_total{code=\"DISK_FULL\"}", 3.0),
            ("ringmq_errors_total{code=\"NOT_LEADER\"}", 4.0),
            ("ringmq_fsync_latency_seconds_sum", 0.25),
            ("ringmq_fsync_latency_seconds_count", 9.0),
            ("ringmq_odd_total{topic=\"x\\\",y\"}", 3.0),
            ("ringmq_requests_total", 5.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(c, want, "gauges and buckets left out");
    }

    #[test]
    fn a_delta_keeps_what_changed_and_series_that_appeared() {
        let before: Counters = [("a_total".to_owned(), 5.0), ("b_total".to_owned(), 1.0)].into();
        let after: Counters =
            [("a_total".to_owned(), 8.0), ("b_total".to_owned(), 1.0), ("c_total".to_owned(), 2.0)]
                .into();
        let d = delta(&before, &after);
        assert_eq!(d, [("a_total".to_owned(), 3.0), ("c_total".to_owned(), 2.0)].into());
    }

    #[test]
    fn a_page_with_more_series_than_the_bound_keeps_the_bound() {
        let page: String =
            (0..MAX_SERIES + 10).map(|i| format!("x_total{{k=\"{i}\"}} 1\n")).collect();
        assert_eq!(parse(&page).len(), MAX_SERIES);
    }
}
