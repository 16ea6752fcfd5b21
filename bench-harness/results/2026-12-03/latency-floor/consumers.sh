#!/bin/sh
# usage: [ROUNDS=3] [OUT=dir] sh consumers.sh BIN_DIR
# With the guest's halt polling at 200 us: the latency workload at 130k msg/s with its four
# consumers and with none (the producer's client alone on the load core), interleaved.
bin=$1; here=$(dirname "$0"); out=${OUT:-$here}; hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
old=$(cat $hp); trap 'echo $old > $hp' EXIT
echo 200000 > $hp
for r in $(seq 1 ${ROUNDS:-3}); do
  for c in 0 4; do
    $bin/ringmq-bench run bench-harness/workloads/latency.toml --spawn-broker --broker-cpus 0 --cpus 1 \
      --quiet --set consumers=$c --out $out/consumers-$c-$r.json > $out/consumers-$c-$r.txt 2>&1
    echo "consumers=$c round $r: $(grep -E "ack p50|ack p99 |pub delay p99 " $out/consumers-$c-$r.txt | tr -s ' ' | paste -sd' ')"
  done
done
