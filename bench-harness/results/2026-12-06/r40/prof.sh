#!/bin/sh
# prof.sh BUILD LABEL WORKLOAD [bench args]: flat profile of the load generator (4 s, 5 s in) and of the broker
b=$1; l=$2; wl=$3; shift 3
rm -rf /mnt/r22/data; fstrim /mnt/r22; sync
cat > /tmp/r40/broker.toml <<T
[broker]
cpus = [0]
data_dir = "/mnt/r22/data"
pin = true
port = 9877
shards = 1
[storage]
flush_mode = "async"
T
/tmp/ab/$b/ringmq broker --config /tmp/r40/broker.toml > /tmp/r40/pb-broker.log 2>&1 & bp=$!
sleep 2
taskset -c 1 /tmp/ab/$b/ringmq-bench run bench-harness/workloads/$wl.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set duration_s=15 "$@" --out /tmp/r40/$l.json > /tmp/r40/$l.txt 2>&1 & bench=$!
sleep 5
perf record ${PERFG:-} -F 1999 -p "$(pgrep -f 'ringmq-bench run')" -o /tmp/r40/$l.perf -- sleep 4 > /dev/null 2>&1 &
perf record -F 999 -p $bp -o /tmp/r40/$l-broker.perf -- sleep 4 > /dev/null 2>&1
wait $bench; kill -INT $bp; wait $bp
echo "$l $(grep -m1 'produce MB/s' /tmp/r40/$l.txt) $(grep -m1 'ack p50' /tmp/r40/$l.txt)"
perf report -i /tmp/r40/$l.perf --no-children --sort comm,sym --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -40 > /tmp/r40/$l-flat.txt
perf report -i /tmp/r40/$l-broker.perf --no-children --sort sym --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -40 > /tmp/r40/$l-broker-flat.txt
