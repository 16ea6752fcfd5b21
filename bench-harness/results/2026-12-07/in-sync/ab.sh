#!/bin/sh
# sync-replicated --replication sync (a master and one replica on CPU 0, load generator on
# CPU 1), builds A and B interleaved, ROUNDS rounds. A build is a directory holding
# ringmq-bench and ringmq. DATA_DIR is trimmed before each run.
# Usage: OUT=dir A=dir B=dir DATA_DIR=dir ROUNDS=3 sh ab.sh
set -u
mkdir -p "$OUT"
for r in $(seq 1 "${ROUNDS:-3}"); do
    for arm in A B; do
        eval bin=\$$arm
        fstrim "$DATA_DIR" 2>/dev/null || true
        echo "== $arm round $r" >&2
        "$bin/ringmq-bench" run bench-harness/workloads/sync-replicated.toml --spawn-broker \
            --data-dir "$DATA_DIR" --broker-cpus 0 --cpus 1 --replication sync --quiet \
            --out "$OUT/$arm-$r.json" > "$OUT/$arm-$r.txt" 2>&1 || echo "   (exit $?)" >&2
    done
done
