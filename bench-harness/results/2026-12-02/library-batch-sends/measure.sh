#!/bin/sh
# Issue 10: the library's batch-send API (send_batch_messages) against raw, one session, two
# rounds: broker on CPU 0, load generator on CPU 1. $1 = out dir. Build first:
# cargo build --release --workspace --bins
set -eu
out=$1; bench=${BENCH:-target/release/ringmq-bench}; w=bench-harness/workloads
mkdir -p "$out"
for round in a b; do
  for n in 64 256; do
    for wl in small-messages batched; do
      "$bench" run "$w/$wl.toml" --spawn-broker --broker-cpus 0 --cpus 1 --quiet --compare-raw \
        --set send_batch_messages=$n --out "$out/$wl-batch$n-$round.json" \
        > "$out/$wl-batch$n-$round.txt" 2>&1 || echo "exit $? for $wl $n $round" >&2
    done
  done
done
"$bench" summary "$out"/*.json > "$out/summary.md"
