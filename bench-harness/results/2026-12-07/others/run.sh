#!/bin/sh
# The workloads run-all.sh leaves out, ROUNDS rounds each, interleaved: sync-replicated with
# --replication none, async and sync (master and replica both on CPU 0), transactional and
# plain sends of the transactional workload, and many-queues-keyed. Broker(s) on CPU 0, load
# generator on CPU 1; DATA_DIR trimmed before each run.
# Usage: OUT=dir BENCH=path/to/ringmq-bench DATA_DIR=dir ROUNDS=2 sh run.sh
set -u
out=${OUT:?}; bench=${BENCH:-target/release/ringmq-bench}; data=${DATA_DIR:?}
w=bench-harness/workloads
mkdir -p "$out"
one() { # tag workload [args]
    tag=$1; wl=$2; shift 2
    fstrim "$data" 2>/dev/null || true
    echo "== $tag" >&2
    "$bench" run "$w/$wl.toml" --spawn-broker --data-dir "$data" --broker-cpus 0 --cpus 1 \
        --quiet --out "$out/$tag.json" "$@" > "$out/$tag.txt" 2>&1 || echo "   (exit $?)" >&2
}
for r in $(seq 1 "${ROUNDS:-2}"); do
    for mode in none async sync; do one "sync-replicated-$mode-$r" sync-replicated --replication $mode; done
    for t in true false; do one "transactional-$t-$r" transactional --set transactional=$t; done
    one "many-queues-keyed-$r" many-queues-keyed
done
