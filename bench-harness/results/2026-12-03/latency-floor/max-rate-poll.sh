#!/bin/sh
# usage: [ROUNDS=2] [OUT=dir] sh max-rate-poll.sh BIN_DIR: batched and small-messages at max
# rate with the guest's halt polling off and at 200 us, interleaved: does polling matter when
# the CPUs are seldom idle?
bin=$1; here=$(dirname "$0"); out=${OUT:-$here}; hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
old=$(cat $hp); trap 'echo $old > $hp' EXIT
for r in $(seq 1 ${ROUNDS:-2}); do
  for wl in batched small-messages; do
    for poll in 0 200000; do
      echo $poll > $hp; l=max-$wl-poll$poll-$r
      $bin/ringmq-bench run bench-harness/workloads/$wl.toml --spawn-broker --broker-cpus 0 --cpus 1 \
        --quiet --out $out/$l.json > $out/$l.txt 2>&1
      echo "$l: $(grep -E "produce msg/s|produce MB/s|ack p99 " $out/$l.txt | tr -s ' ' | paste -sd' ')"
    done
  done
done
