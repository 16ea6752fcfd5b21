#!/bin/sh
# usage: [ROUNDS=3] [POLL=0] [OUT=dir] sh sync-send.sh: base against early, interleaved: one
# producer with one message in flight (each send waits for its ack, as RocketMQ's
# synchronous send does), 100-byte messages, no consumers: messages a second = 1 / round trip.
here=$(dirname "$0"); out=${OUT:-$here}; hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
old=$(cat $hp); trap 'echo $old > $hp' EXIT
echo ${POLL:-0} > $hp
for r in $(seq 1 ${ROUNDS:-3}); do
  for arm in base early; do
    l=sync-poll${POLL:-0}-$arm-$r
    /tmp/ab/$arm/ringmq-bench run bench-harness/workloads/small-messages.toml --spawn-broker --broker-cpus 0 \
      --cpus 1 --quiet --producers 1 --set max_in_flight=1 --out $out/$l.json > $out/$l.txt 2>&1
    echo "$l: $(grep -E "produce msg/s|ack p50|ack p99 " $out/$l.txt | tr -s ' ' | paste -sd' ')"
  done
done
