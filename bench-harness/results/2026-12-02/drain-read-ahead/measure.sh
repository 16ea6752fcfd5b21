#!/bin/sh
# backlog-drain, library and raw (--compare-raw), before/after interleaved per round, with
# fio's sequential read of the same disk at the start of each round:
#   before = /tmp/ab/before (b0bc122: every disk run of a fetch reads read_ahead_bytes more)
#   after  = /tmp/ab/after  (362d2be: read-ahead only when a fetch is one disk run)
# Release builds of ringmq and ringmq-bench copied side by side (each bench spawns its own
# broker). Broker on CPU 0, load generator on CPU 1. Run from the repository root.
set -u
out=$(dirname "$0")
w=bench-harness/workloads
one() { # label bin
    echo "$(date -u +%T) $1 load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
    "$2/ringmq-bench" run "$w/backlog-drain.toml" --spawn-broker --broker-cpus 0 --cpus 1 \
        --quiet --compare-raw --out "$out/$1.json" > "$out/$1.txt" 2>&1 || echo "   ($1 exit $?)" >&2
}
for i in $(seq 1 "${ROUNDS:-2}"); do
    fio --name=seqread --filename=/work/fio.test --rw=read --bs=1M --size=2G --direct=1 \
        --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json \
        > "$out/fio-read-$i.json" 2>/dev/null
    rm -f /work/fio.test
    one before-$i /tmp/ab/before
    one after-$i /tmp/ab/after
done
