#!/bin/sh
# Round 46: does the file-read trace cost the drain anything? Raw backlog-drain (2 GiB)
# against an external broker on the VM's root filesystem, its log level `warn` (off) or
# `warn,ringmq::storage::dma_dir=trace` (on), alternating, ROUNDS rounds. Broker on CPU 0,
# load generator on CPU 1. Run from the repository root; B holds ringmq and ringmq-bench.
#   OUT=dir B=build-dir DATA=/work/r46root ROUNDS=n sh trace-ab.sh
OUT=${OUT:?}; B=${B:?}; DATA=${DATA:?}; ROUNDS=${ROUNDS:-3}; mkdir -p "$OUT"
printf '[broker]\ncpus = [0]\ndata_dir = "%s/data"\npin = true\nport = 9877\nshards = 1\n[storage]\nflush_mode = "async"\ncache_bytes = 67108864\n' \
    "$DATA" > "$OUT/broker.toml"
for r in $(seq 1 "$ROUNDS"); do
  for arm in off on; do
    rm -rf "$DATA"/data; sync
    if [ $arm = on ]; then lv="warn,ringmq::storage::dma_dir=trace"; else lv=warn; fi
    "$B"/ringmq --log-level "$lv" broker --config "$OUT/broker.toml" > /dev/null 2>&1 & bp=$!
    sleep 2
    taskset -c 1 "$B"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --broker 127.0.0.1:9877 \
        --cpus 1 --quiet --set client=raw --out "$OUT/$arm-$r.json" > "$OUT/$arm-$r.txt" 2>&1
    kill -INT $bp; wait $bp
    echo "$r $arm $(grep 'backlog drain MB/s' "$OUT/$arm-$r.txt" | tr -s ' ')"
  done
done
rm -rf "$DATA"/data
