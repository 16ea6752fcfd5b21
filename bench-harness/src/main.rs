//! `ringmq-bench`: the load generator. It grows into the full harness (workloads, HdrHistogram
//! latency, JSON reports) in its own issue; today it only reports the format version it speaks.

fn main() {
    println!(
        "ringmq-bench: speaks batch format v{}; the workload runner is not built yet",
        ringmq::format::FORMAT_VERSION
    );
}
