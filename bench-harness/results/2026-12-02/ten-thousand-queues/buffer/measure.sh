#!/bin/sh
# many-queues with larger library producer buffers (and the bench's in-flight bound raised to
# match), batched alongside; two rounds. Build: /tmp/ab/buf (this revision's release build).
cd /work/main
O=bench-harness/results/2026-12-02/ten-thousand-queues/buffer
for round in 1 2; do
  for cfg in "32:50000" "128:200000" "512:800000" "batched"; do
    if [ "$cfg" = batched ]; then
      name=batched-$round; args="bench-harness/workloads/batched.toml"
    else
      mib=${cfg%%:*}; mif=${cfg##*:}; name=mq-${mib}mib-$round
      args="bench-harness/workloads/many-queues.toml --set producer_buffer_bytes=$((mib*1048576)) --set max_in_flight=$mif"
    fi
    /tmp/ab/buf/ringmq-bench run $args --spawn-broker --broker-cpus 0 --cpus 1 --quiet --out $O/$name.json > $O/$name.txt 2>&1
    echo "$name $(grep -E 'produce MB/s' $O/$name.txt | awk '{print $NF}') p99=$(grep 'ack p99 us' $O/$name.txt | head -1 | awk '{print $NF}') $(sed -n 2p $O/$name.txt | grep -o "[0-9]* failed") load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
