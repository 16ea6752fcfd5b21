#!/bin/sh
# usage: [ROUNDS=4] [FIRST=1] [POLLS="0 200000"] [MAX_RATE=1] [OUT=dir] sh ab.sh: base (/tmp/ab/base) against early (/tmp/ab/early),
# interleaved: the latency workload at its 130k msg/s with the guest's halt polling off (this
# VM's setting) and at 200 us; then batched and small-messages once per arm (max rate).
here=$(dirname "$0"); out=${OUT:-$here}; hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
old=$(cat $hp); trap 'echo $old > $hp' EXIT
run() { # arm label workload [set]
  /tmp/ab/$1/ringmq-bench run bench-harness/workloads/$3.toml --spawn-broker --broker-cpus 0 --cpus 1 \
    --quiet ${4:+--set $4} --out $out/$2.json > $out/$2.txt 2>&1
}
for r in $(seq ${FIRST:-1} $((${FIRST:-1} + ${ROUNDS:-4} - 1))); do
  for poll in ${POLLS:-0 200000}; do
    echo $poll > $hp
    for arm in base early; do
      run $arm lat-poll$poll-$arm-$r latency
      echo "poll=$poll $arm round $r: $(grep -E "ack p50|ack p99 |ack p99.9 " $out/lat-poll$poll-$arm-$r.txt | tr -s ' ' | paste -sd' ')"
    done
  done
done
echo $old > $hp
[ "${MAX_RATE:-1}" = 1 ] || exit 0
for wl in batched small-messages; do
  for arm in base early; do
    run $arm $wl-$arm $wl
    echo "$wl $arm: $(grep -E "produce msg/s|produce MB/s|ack p99 " $out/$wl-$arm.txt | tr -s ' ' | paste -sd' ')"
  done
done
