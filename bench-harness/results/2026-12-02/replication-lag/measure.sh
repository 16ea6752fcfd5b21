#!/bin/sh
# Issue 13 item 4: the replica's lag during a sync-replicated run with async replication (and
# one sync run next to it), from the revision the release binaries were built from. Run from
# the repository root after `cargo build --release -p ringmq -p ringmq-bench`:
#   sh bench-harness/results/2026-12-02/replication-lag/measure.sh [modes, default "async sync"]
# OUT=<dir> writes the reports there instead (the quiet rerun: OUT=.../replication-lag-quiet).
# A run whose counts fail (sends timed out) still leaves its report; the next mode runs.
# Master and replica pinned to CPU 0, ringmq-bench to CPU 1, same disk, sync flush; the lag is
# sampled from the master's /metrics every 100 ms (results.replication_lag in the JSON).
set -eu
out=${OUT:-bench-harness/results/2026-12-02/replication-lag}
mkdir -p $out target/bench-data
for mode in ${*:-async sync}; do
  echo "$mode $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/uptime.txt
  target/release/ringmq-bench run bench-harness/workloads/sync-replicated.toml --spawn-broker \
    --broker-cpus 0 --cpus 1 --replication $mode --data-dir target/bench-data \
    --out $out/repl-$mode.json > $out/repl-$mode.txt 2>&1 || echo "$mode: ringmq-bench exit $?" >> $out/uptime.txt
done
echo "end $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/uptime.txt
