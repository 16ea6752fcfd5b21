#!/bin/sh
# Where the broker's time goes for the same load through the front and natively: starts a
# release broker (front on 21911, native on 21811), runs raw_front and native load (4 threads,
# 100 B, 12 s each) and samples the broker with `perf record -g` for 8 s in the middle of
# each; writes perf-<name>.txt (time by object, then ringmq's top symbols) next to this script.
# Run from the repository root after the release build named in run_front_bench.py.
set -eu
HERE=$(dirname "$0")
TMP=$(mktemp -d /tmp/ringmq-front-perf-XXXXXX)
cat > "$TMP/broker.toml" <<CFG
[broker]
port = 21811
shards = 2
pin = false
data_dir = "$TMP/data"
[rocketmq]
enabled = true
broker_port = 21911
namesrv_port = 21876
[metrics]
listen = "127.0.0.1:0"
CFG
target/release/ringmq broker --config "$TMP/broker.toml" > "$TMP/out" 2>/dev/null &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null; rm -rf "$TMP"' EXIT
until grep -q ready "$TMP/out"; do sleep 0.2; done
for name in raw_front native; do
  if [ $name = raw_front ]; then
    target/release/examples/rocketmq_raw_sync_sends 127.0.0.1:21911 PerfRaw 4 100 12 > "$TMP/$name.json" &
  else
    target/release/examples/native_sync_sends 127.0.0.1:21811 PerfNative 4 100 12 > "$TMP/$name.json" &
  fi
  LOAD=$!
  sleep 2
  echo "load average: $(cat /proc/loadavg)" > "$HERE/perf-$name.txt"
  perf record -q -F 999 -g -p $BROKER -o "$TMP/perf.data" -- sleep 8 2>/dev/null
  wait $LOAD
  cat "$TMP/$name.json" >> "$HERE/perf-$name.txt"
  tidy() { grep -v '^#' | grep -v '^$' | sed 's/ *- *- *$//; s/  *$//' | cut -c1-150; }
  echo "== by object (kernel, ringmq, libc)" >> "$HERE/perf-$name.txt"
  perf report -i "$TMP/perf.data" --no-children --stdio -g none --sort dso 2>/dev/null \
    | tidy | head -8 >> "$HERE/perf-$name.txt"
  echo "== ringmq's own symbols (percent of all samples)" >> "$HERE/perf-$name.txt"
  perf report -i "$TMP/perf.data" --no-children --stdio -g none --dsos ringmq \
    --sort symbol 2>/dev/null | tidy | head -40 >> "$HERE/perf-$name.txt"
done
