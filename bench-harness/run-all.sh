#!/bin/sh
# Runs every workload of the BENCHMARKS.md "Broker" section twice (two rounds, so a noisy
# moment hits one run, not both), after the machine baseline (fio, iperf3), on a 2-core
# machine: broker on CPU 0, load generator on CPU 1. Reports go to $1 (default
# target/ringmq-bench/all-<time>); `ringmq-bench summary $1/*.json` prints the table (the
# library and raw runs of a --compare-raw report are rows of their own).
#
# Build first: cargo build --release --workspace --bins
# DATA_DIR=dir puts the spawned brokers' data directories there (default: the temp dir). On ext4
# without a journal the many-queues runs pay its inode reuse delay after each other's deletions
# (BENCHMARKS.md, 2026-12-05): use a journaled filesystem there. Before each run, DATA_DIR is
# trimmed (fstrim) if possible. SETTLE=s waits s seconds more before each run (default 0): on
# a virtual disk a run that starts within seconds of a heavy one can run slower while the
# disk is still busy with what that one wrote (a backlog-drain right after another drained
# about 12% slower than one 20 s later: BENCHMARKS.md, 2026-12-07 round 47).
set -eu
out=${1:-target/ringmq-bench/all-$(date +%Y%m%d-%H%M%S)}
bench=${BENCH:-target/release/ringmq-bench}
data=${DATA_DIR:+--data-dir $DATA_DIR}
w=bench-harness/workloads
mkdir -p "$out/baseline"

quiet() {
    # Wait (at most 5 min) until no cargo/rustc runs: other builds share the two CPUs.
    i=0
    while pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; do
        i=$((i + 1)); [ $i -gt 300 ] && { echo "machine still busy, running anyway" >&2; break; }
        sleep 1
    done
    # The previous run's deleted data is trimmed now, not while the next run writes (a
    # filesystem mounted with `-o discard`, or a loop device's image, punched it out during
    # the next run: BENCHMARKS.md, 2026-12-05). Needs root; skipped where it cannot run.
    if [ -n "${DATA_DIR:-}" ]; then fstrim "$DATA_DIR" 2>/dev/null || true; fi
    sleep "${SETTLE:-0}"
}

baseline() {
    quiet
    fio --name=seqwrite --filename=${DATA_DIR:-/work}/fio.test --rw=write --bs=1M --size=2G --direct=1 \
        --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json \
        > "$out/baseline/fio-$1.json"
    # Context for backlog-drain (reads): the same file read back sequentially.
    fio --name=seqread --filename=${DATA_DIR:-/work}/fio.test --rw=read --bs=1M --size=2G --direct=1 \
        --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json \
        > "$out/baseline/fio-read-$1.json"
    rm -f ${DATA_DIR:-/work}/fio.test
    taskset -c 0 iperf3 -s -1 -D -p 5399 -B 127.0.0.1 >/dev/null; sleep 0.5
    taskset -c 1 iperf3 -c 127.0.0.1 -p 5399 -t 5 -J > "$out/baseline/iperf3-$1.json"
}

one() { # round name [--set k=v ...]
    round=$1; name=$2; shift 2
    tag=$(echo "$name $*" | sed 's/--set //g; s/[^A-Za-z0-9=.-]/_/g; s/__*/_/g')
    quiet
    echo "== round $round: $name $*" >&2
    "$bench" run "$w/$name.toml" --spawn-broker $data --broker-cpus 0 --cpus 1 --quiet \
        --out "$out/$tag-$round.json" "$@" > "$out/$tag-$round.txt" 2>&1 || echo "   (exit $?)" >&2
}

# many-queues --compare-raw writes about 30 s of the library's rate and then 30 s of the raw
# client's into one broker: on the reference machine 20 GB, then up to 55 GB more, all but the
# last segments deleted by retention (disk_max_used_ratio) as it goes. With too little room
# retention cannot free segments fast enough and the raw run gets DISK_FULL refusals: its
# number is then not valid. Round 29 needed 64 GB; since round 30 (segments freed before the
# index drop, which runs on its own) a 40 GiB filesystem with 37 GiB free sufficed in every
# run (BENCHMARKS.md, rounds 29-31).
avail_gb=$(df -P -B1G "${DATA_DIR:-${TMPDIR:-/tmp}}" 2>/dev/null | awk 'NR == 2 {print $4}')
if [ -n "$avail_gb" ] && [ "$avail_gb" -lt 36 ]; then
    echo "warning: ${avail_gb} GiB free where the brokers write; many-queues --compare-raw may" \
        "get DISK_FULL in its raw run (36 GiB or more recommended)" | tee "$out/space-warning.txt" >&2
fi

for round in a b; do
    baseline $round
    # --compare-raw: library, then raw, against the same broker (one JSON with both and the
    # library/raw ratios). Keyed and fixed-rate workloads run through the library only.
    one $round batched --compare-raw
    one $round batched --compare-raw --set batch_max_bytes=65536
    one $round sync-flush --compare-raw
    one $round sync-flush --compare-raw --set batch_max_bytes=65536
    one $round small-messages --compare-raw
    one $round small-messages --compare-raw --set storage.flush_mode=sync
    one $round ordered
    one $round latency
    one $round latency --set target_rate=20000
    # The same with the producer lingering 1 ms: a sixth of the requests (BENCHMARKS.md,
    # round 49: on a VM each request's wake-ups cost both vCPUs' time).
    one $round latency --set linger_ms=1
    one $round backlog-drain --compare-raw
    one $round many-queues --compare-raw
    one $round many-queues-per-message
    one $round many-queues-sticky
    one $round many-queues-linger
done
# Give the last run's deleted data back too (a loop device's image keeps it otherwise).
if [ -n "${DATA_DIR:-}" ]; then fstrim "$DATA_DIR" 2>/dev/null || true; fi
"$bench" summary "$out"/*.json > "$out/summary.md"
cat "$out/summary.md"
