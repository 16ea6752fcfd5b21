#!/bin/sh
# small-messages, library vs raw (--compare-raw), before/after interleaved per round:
#   before = /tmp/c2/before (c4e602f, main as copied: per-message Pending, new Message per send)
#   after  = /tmp/c2/a1     (bc95141: SendHandle per batch, reused Message via send_async_ref)
#   owned  = after, --set send_owned_messages=true (a new Message per send_async, as before)
# Broker on CPU 0, load generator on CPU 1, release builds; the broker binary is the same
# (c4e602f) in all three. Load average logged before each run (machine shared with agents
# compiling: noisy).
set -u
out=$(dirname "$0")
w=bench-harness/workloads
rounds=${ROUNDS:-3}  # FIRST=4 ROUNDS=5: rounds 4 and 5
one() { # label bin args...
    label=$1; bin=$2; shift 2
    echo "$(date -u +%T) $label load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
    "$bin/ringmq-bench" run "$w/small-messages.toml" --spawn-broker --broker-cpus 0 --cpus 1 \
        --quiet --compare-raw --out "$out/$label.json" "$@" > "$out/$label.txt" 2>&1 \
        || echo "   ($label exit $?)" >&2
    echo "$(date -u +%T) $label done" >&2
}
for i in $(seq "${FIRST:-1}" "$rounds"); do
    one small-before-$i /tmp/c2/before
    one small-after-$i /tmp/c2/a1
    one small-owned-$i /tmp/c2/a1 --set send_owned_messages=true
done
