#!/bin/sh
# Acknowledged sends lost across async-replication failovers: the SIGKILL-and-promote rounds
# of tests/replication_promote.rs (3 brokers, 2 shards each, sync flush, async replication;
# each round a producer sends, the master is SIGKILLed, the next broker is promoted live and
# the others rejoin as its replicas). Debug build (cargo test). Run from the repository root:
#   sh bench-harness/results/2026-12-02/replication-loss/run.sh [rounds]
set -eu
out=bench-harness/results/2026-12-02/replication-loss
rounds=${1:-40}
rev=$(git rev-parse HEAD)
test -z "$(git status --porcelain --untracked-files=no)" || rev="$rev+dirty"
before=$(cut -d' ' -f1-3 /proc/loadavg)
RINGMQ_PROMOTE_ROUNDS=$rounds RINGMQ_PROMOTE_REPORT=$out/async-loss.json \
  cargo test --test replication_promote async_promote_rounds_report_what_they_lose -- --nocapture
after=$(cut -d' ' -f1-3 /proc/loadavg)
cat > $out/meta.json <<META
{"revision": "$rev", "command": "RINGMQ_PROMOTE_ROUNDS=$rounds cargo test --test replication_promote async_promote_rounds_report_what_they_lose -- --nocapture", "loadavg_before": "$before", "loadavg_after": "$after", "nproc": $(nproc)}
META
cat $out/async-loss.json $out/meta.json
