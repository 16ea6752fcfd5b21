#!/bin/sh
# Before/after, interleaved (A B A B A B): A = /work/perf-before (07d2806, main),
# B = /work/perf-after (339cc05). Broker on CPU 0, load generator on CPU 1, release builds,
# --compare-raw (library then raw against the same broker). The machine was shared with other
# agents compiling (load average 8-12): compare medians and ratios within this session only.
set -u
out=$(dirname "$0")
w=bench-harness/workloads
one() { # label bin name args...   (reports to $out)
    label=$1; bin=$2; name=$3; shift 3
    "$bin/ringmq-bench" run "$w/$name.toml" --spawn-broker --broker-cpus 0 --cpus 1 --quiet \
        --out "$out/$label.json" "$@" > "$out/$label.txt" 2>&1 || echo "   ($label exit $?)" >&2
    echo "$(date -u +%T) $label done" >&2
}
for i in 1 2 3; do
    one small-before-$i /work/perf-before small-messages --compare-raw
    one small-after-$i /work/perf-after small-messages --compare-raw
    # The harness change alone (new harness, old library: an uncommitted build of 07d2806
    # plus the bench-harness/src/library.rs of 97d84ab), to split the gain; its reports are
    # not kept here (not a committed revision).
    keep=$out; out=/tmp/perf
    one small-harnessonly-$i /work/perf-h1 small-messages --compare-raw
    out=$keep
    one batched-before-$i /work/perf-before batched --compare-raw
    one batched-after-$i /work/perf-after batched --compare-raw
    one batched64k-before-$i /work/perf-before batched --compare-raw --set batch_max_bytes=65536
    one batched64k-after-$i /work/perf-after batched --compare-raw --set batch_max_bytes=65536
    one syncflush-before-$i /work/perf-before sync-flush --compare-raw
    one syncflush-after-$i /work/perf-after sync-flush --compare-raw
    one latency20k-before-$i /work/perf-before latency --set target_rate=20000
    one latency20k-after-$i /work/perf-after latency --set target_rate=20000
done
