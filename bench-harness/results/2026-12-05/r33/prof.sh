#!/bin/sh
# prof.sh ARM LABEL WORKLOAD [bench args...]: WORKLOAD at max rate against a broker on CPU 0
# (load generator on CPU 1, binaries in /tmp/ab/ARM), run from the repository's root; reports
# and profiles in /tmp/r33. STAT=1: `perf stat` of the load generator's context switches;
# PERF=1: `perf record` of it for 4 s (PERFG: call-graph option, default -g; PERFF: frequency,
# default 999), PROF_AT s in (default 5). The data directory is deleted afterwards.
a=$1; l=$2; wl=$3; shift 3; dir=/work/r33/kd/$l; mkdir -p $dir /tmp/r33
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
/tmp/ab/$a/ringmq-bench run bench-harness/workloads/$wl.toml --broker 127.0.0.1:19911 \
    --cpus 1 --quiet "$@" --out /tmp/r33/$l.json > /tmp/r33/$l.txt 2>&1 &
b=$!
sleep ${PROF_AT:-5}
if [ -n "${STAT:-}" ]; then
perf stat -e context-switches,task-clock -p "$(pgrep -f "ringmq-bench run")" -o /tmp/r33/$l.stat -- sleep 4 > /dev/null 2>&1
fi
if [ -n "${PERF:-}" ]; then
perf record ${PERFG:--g} -F ${PERFF:-999} -p "$(pgrep -f 'ringmq-bench run')" -o /tmp/r33/$l.perf -- sleep 4 > /dev/null 2>&1
fi
wait $b
kill $pid; wait $pid
rm -rf $dir/data
grep "MB/s\|msg/s" /tmp/r33/$l.txt | head -5
