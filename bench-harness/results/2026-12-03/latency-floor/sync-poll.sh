#!/bin/sh
# usage: [ROUNDS=3] [OUT=dir] sh sync-poll.sh BIN_DIR: synchronous sends (one producer, one
# 100-byte message in flight, no consumers) with the guest's halt polling off and at 200 us,
# interleaved: messages a second = 1 / round trip.
bin=$1; here=$(dirname "$0"); out=${OUT:-$here}; hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
old=$(cat $hp); trap 'echo $old > $hp' EXIT
for r in $(seq 1 ${ROUNDS:-3}); do
  for poll in 0 200000; do
    echo $poll > $hp; l=sync-poll$poll-$r
    $bin/ringmq-bench run bench-harness/workloads/small-messages.toml --spawn-broker --broker-cpus 0 \
      --cpus 1 --quiet --producers 1 --set max_in_flight=1 --out $out/$l.json > $out/$l.txt 2>&1
    echo "$l: $(grep -E "produce msg/s|ack p50|ack p99 " $out/$l.txt | tr -s ' ' | paste -sd' ')"
  done
done
