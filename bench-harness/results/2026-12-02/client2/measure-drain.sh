#!/bin/sh
# backlog-drain, library vs raw (--compare-raw), before/after interleaved per round:
#   before = /tmp/c2/before (c4e602f: a fetch's disk reads one after another)
#   after  = /tmp/c2/a2     (the revision named in BENCHMARKS.md: a fetch's disk reads issued at once)
# The broker binary differs (the change is in the broker's reader); each harness runs its own.
# Broker on CPU 0, load generator on CPU 1; 2 GiB backlog, 64 MiB cache. fio is not installed
# on this VM: the disk's read bandwidth was not measured in this session.
set -u
out=$(dirname "$0")
w=bench-harness/workloads
rounds=${ROUNDS:-3}  # FIRST=4 ROUNDS=5: rounds 4 and 5
one() { # label bin args...
    label=$1; bin=$2; shift 2
    echo "$(date -u +%T) $label load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
    "$bin/ringmq-bench" run "$w/backlog-drain.toml" --spawn-broker --broker-cpus 0 --cpus 1 \
        --quiet --compare-raw --out "$out/$label.json" "$@" > "$out/$label.txt" 2>&1 \
        || echo "   ($label exit $?)" >&2
    echo "$(date -u +%T) $label done" >&2
}
for i in $(seq "${FIRST:-1}" "$rounds"); do
    one drain-before-$i /tmp/c2/before
    one drain-after-$i /tmp/c2/a2
done
