#!/bin/bash
# lat.sh ARM RATE SLICE_NS TAG
arm=$1; rate=$2; sl=$3; tag=$4; B=/tmp/ab/$arm; cd /work/main
$B/ringmq-bench run bench-harness/workloads/latency.toml --spawn-broker --broker-bin $B/ringmq --broker-cpus 0 --cpus 1 --quiet --set target_rate=$rate $EXTRA --out /tmp/r21/$tag.json > /tmp/r21/$tag.txt 2>&1 & p=$!
sleep 1.0
if [ "$sl" != 0 ]; then python3 /tmp/r21/slice.py $p $sl; fi
wait $p
echo "$tag $(grep -E 'ack p50|ack p99 |ack p99 us|e2e p99 us' /tmp/r21/$tag.txt | awk '{printf "%s=%s ", $2$3, $4}')"
