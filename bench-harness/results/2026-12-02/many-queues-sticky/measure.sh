#!/bin/sh
# many-queues (round-robin), many-queues-sticky and batched, library, interleaved per round.
# Run from the repository root after `cargo build --release --workspace --bins`. Broker on
# CPU 0, load generator on CPU 1.   OUT=dir: reports there, not next to this script.
set -u
out=${OUT:-$(dirname "$0")}
bench=${BENCH:-target/release/ringmq-bench}
for i in $(seq 1 "${ROUNDS:-3}"); do
    for w in many-queues many-queues-sticky batched; do
        echo "$(date -u +%T) $w-$i load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
        "$bench" run "bench-harness/workloads/$w.toml" --spawn-broker --broker-cpus 0 --cpus 1 \
            --quiet --out "$out/$w-$i.json" > "$out/$w-$i.txt" 2>&1 || echo "   ($w-$i exit $?)" >&2
    done
done
