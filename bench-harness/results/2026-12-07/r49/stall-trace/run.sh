#!/bin/sh
# Runs the `latency` workload ROUNDS times with trace.bt and sampler.py recording, one set of
# files per round: latency-N.json (the report), trace-N.txt, stat-N.txt.
# BIN: folder with ringmq and ringmq-bench; DATA: an empty ext4 folder; OUT: results folder.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:?}; DATA=${DATA:?}; OUT=${OUT:-$HERE}; ROUNDS=${ROUNDS:-5}
mkdir -p "$OUT"
for i in $(seq 1 "$ROUNDS"); do
  rm -rf "$DATA"/*; fstrim "$DATA" 2>/dev/null || true; sync; sleep 5
  BT=
  if [ "${TRACE:-1}" = 1 ]; then
    bpftrace "$HERE/trace.bt" > "$OUT/trace-$i.txt" 2>/dev/null &
    BT=$!
  fi
  python3 "$HERE/sampler.py" > "$OUT/stat-$i.txt" &
  SP=$!
  sleep 3
  PATH="$BIN:$PATH" "$BIN/ringmq-bench" run bench-harness/workloads/latency.toml --spawn-broker ${SET:-} \
    --data-dir "$DATA" --broker-cpus 0 --cpus 1 --quiet --out "$OUT/latency-$i.json" || true
  sleep 1
  [ -z "$BT" ] || kill -INT $BT
  kill $SP; wait 2>/dev/null || true
  python3 -c "import json;r=json.load(open('$OUT/latency-$i.json'))['results']['ack_latency'];print('round $i ack p50 %.2f p99 %.2f ms'%(r['p50_us']/1e3,r['p99_us']/1e3))"
done
