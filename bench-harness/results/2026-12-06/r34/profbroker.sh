#!/bin/sh
# profbroker.sh BUILD ARM-WORKLOAD LABEL: flat profile of the broker for 4 s, 5 s into a 15 s run
b=$1; wl=$2; l=$3
rm -rf /mnt/r22/data; fstrim /mnt/r22; sync
/tmp/ab/$b/ringmq broker --config /tmp/r34/gate2/broker.toml > /tmp/r34/pb-broker.log 2>&1 & bp=$!
sleep 2
taskset -c 1 /tmp/ab/$b/ringmq-bench run bench-harness/workloads/$wl.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 --out /tmp/r34/pb-$l.json > /tmp/r34/pb-$l.txt 2>&1 & bench=$!
sleep 5
perf record -F 999 -p $bp -o /tmp/r34/pb-$l.perf -- sleep 4 > /dev/null 2>&1
wait $bench; kill -INT $bp; wait $bp
echo "$l $(grep -m1 'produce MB/s' /tmp/r34/pb-$l.txt) $(grep -m1 'ack p50' /tmp/r34/pb-$l.txt)"
perf report -i /tmp/r34/pb-$l.perf --no-children --sort sym --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -12
