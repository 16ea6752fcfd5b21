#!/bin/sh
# prof.sh ARM LABEL [SETS...]: many-queues at max rate against a broker on CPU 0 (load generator
# on CPU 1, binaries in /tmp/ab/ARM), profiled 14 s in; reports and the profile in /tmp/mq.
#   default:      perf record -g -a -F 499 -- sleep 6        (both CPUs: p2)
#   PERF=dwarf:   perf record --call-graph dwarf,16384 -F 299 -p BENCH -- sleep 3   (c1)
# p1 was the default form with -p BROKER instead of -a (the script's first version).
a=$1; l=$2; shift 2; dir=/work/kd/$l; mkdir -p $dir /tmp/mq
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
/tmp/ab/$a/ringmq-bench run bench-harness/workloads/many-queues.toml --broker 127.0.0.1:19911 \
    --cpus 1 --quiet "$@" --out /tmp/mq/$l.json > /tmp/mq/$l.txt 2>&1 &
b=$!
sleep 14
if [ "${PERF:-}" = dwarf ]; then
    perf record --call-graph dwarf,16384 -F 299 -p "$(pgrep -f 'ringmq-bench run')" \
        -o /tmp/mq/$l.perf -- sleep 3 > /dev/null 2>&1
else
    perf record -g -a -F 499 -o /tmp/mq/$l.perf -- sleep 6 > /dev/null 2>&1
fi
wait $b
kill $pid; wait $pid
rm -rf $dir/data
grep "produce MB/s" /tmp/mq/$l.txt
