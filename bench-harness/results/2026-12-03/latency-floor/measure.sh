#!/bin/sh
# usage: [ROUNDS=3] [OUT=dir] sh measure.sh BIN_DIR
# The latency workload against this machine's own floor, interleaved, with the guest's halt
# polling off (this VM's default) and at 200 us. Per round and setting:
#   stalls.py      CPU time the host takes from a running vCPU (busy loop on CPU 1, then 0);
#   echo_floor     a bare TCP request/reply between CPU 1 and CPU 0 at the latency workload's
#                  request rate and size (~10,500 requests/s of ~12.5 KiB at 130k msg/s);
#   latency        ringmq-bench (library; raw runs only at max rate) at 130k and 10k msg/s.
# BIN_DIR holds ringmq, ringmq-bench and examples/echo_floor
# (cargo build --release --workspace --bins && cargo build --release -p ringmq-bench --example echo_floor).
bin=$1; here=$(dirname "$0"); out=${OUT:-$here}; hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
old=$(cat $hp); trap 'echo $old > $hp' EXIT
echo "cpuidle driver $(cat /sys/devices/system/cpu/cpuidle/current_driver), guest_halt_poll_ns $old, $(uname -r)" > $out/machine.txt
for r in $(seq 1 ${ROUNDS:-3}); do
  for poll in 0 200000; do
    echo $poll > $hp; tag=poll$poll-$r
    python3 $here/stalls.py 1 3 > $out/stalls-cpu1-$tag.json
    python3 $here/stalls.py 0 3 > $out/stalls-cpu0-$tag.json
    $bin/examples/echo_floor 10500 12800 8 0 1 > $out/echo-$tag.json
    for rate in 130000 10000; do
      $bin/ringmq-bench run bench-harness/workloads/latency.toml --spawn-broker --broker-cpus 0 --cpus 1 \
        --quiet --set target_rate=$rate --out $out/latency-$rate-$tag.json > $out/latency-$rate-$tag.txt 2>&1
    done
    echo "$tag $(cat $out/stalls-cpu1-$tag.json) $(cat $out/echo-$tag.json)"
    cat /proc/loadavg >> $out/loadavg.txt
  done
done
