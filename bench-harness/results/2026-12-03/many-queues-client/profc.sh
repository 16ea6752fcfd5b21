#!/bin/sh
# prof.sh ARM LABEL [SETS...]: many-queues max rate, perf of broker 8 s
a=$1; l=$2; shift 2; dir=/work/kd/$l; mkdir -p $dir
cat > $dir/broker.toml <<CFG
[broker]
port = 19911
data_dir = "$dir/data"
shards = 1
cpus = [0]
pin = true
[storage]
flush_mode = "async"
CFG
/tmp/ab/$a/ringmq broker --config $dir/broker.toml > $dir/broker.log 2>&1 &
pid=$!
sleep 2
/tmp/ab/$a/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml --broker 127.0.0.1:19911 --cpus 1 --quiet "$@" --out /tmp/mq/$l.json > /tmp/mq/$l.txt 2>&1 &
b=$!
sleep 14
perf record --call-graph dwarf,16384 -F 299 -p $(pgrep -f "ringmq-bench run") -o /tmp/mq/$l.perf -- sleep 3 > /dev/null 2>&1
wait $b
kill $pid; wait $pid
rm -rf $dir/data
grep "produce MB/s" /tmp/mq/$l.txt
