#!/bin/sh
# The broker's CPU time per produce request in many-queues: a broker with metrics on CPU 0
# (data kept under /work/kd, so no run deletes the index files of the one before), the load
# generator on CPU 1; after the run, the broker process's utime+stime (all its threads,
# io_uring workers included) over ringmq_requests_total. Usage: cpu-per-request.sh ARM LABEL
# (ARM: a dir under /tmp/ab holding ringmq + ringmq-bench); OUT=dir. Delete /work/kd afterwards.
set -eu
arm=$1; label=$2
dir=/work/kd/$label
mkdir -p $dir
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
/tmp/ab/$arm/ringmq broker --config $dir/broker.toml --metrics-listen 127.0.0.1:19990 > $dir/broker.log 2>&1 &
pid=$!
sleep 2
/tmp/ab/$arm/ringmq-bench run bench-harness/workloads/many-queues.toml --broker 127.0.0.1:19911 \
    --cpus 1 --quiet --out $OUT/$label.json > $OUT/$label.txt 2>&1 || true
ticks=$(awk '{print $14 + $15}' /proc/$pid/stat)
hz=$(getconf CLK_TCK)
curl -s http://127.0.0.1:19990/metrics | grep -E '^ringmq_(requests|append_batches|append_records)_total' > $OUT/$label-metrics.txt
reqs=$(grep '^ringmq_requests_total' $OUT/$label-metrics.txt | awk '{print $2}')
kill $pid; wait $pid || true
echo "$label cpu_s=$(echo "scale=2; $ticks / $hz" | bc) requests=$reqs us_per_request=$(echo "scale=2; $ticks * 1000000 / $hz / $reqs" | bc) $(grep 'produce MB/s' $OUT/$label.txt | awk '{print "MB/s=" $NF}')"
