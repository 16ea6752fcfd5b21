#!/bin/bash
# Issue 9 measurement: broker RSS and restart time with 10,000 queues x 5M single-message batches.
# $1 = dir with ringmq + ringmq-bench, $2 = results dir. External broker (started here), raw client.
set -u
bin=$1; out=$2; mkdir -p $out
d=/work/bench-10k; rm -rf $d; mkdir -p $d
port=19911
cat > $d/b.toml <<CFG
[broker]
port = $port
shards = 2
data_dir = "$d/data"
CFG
rss() { awk '/VmRSS/ {print int($2/1024)}' /proc/$1/status; }
start() { # sets pid and ready (ms from exec to the ready line)
  rm -f $d/out.txt; local t0=$(date +%s%N)
  $bin/ringmq broker --config $d/b.toml --log-level info > $d/out.txt 2>> $d/err.txt &
  pid=$!
  while ! grep -q "ready" $d/out.txt 2>/dev/null; do sleep 0.01; done
  ready=$(( ($(date +%s%N) - t0) / 1000000 ))
  # The ready line comes once every log is open; requests are served once the shards also
  # rebuilt their idempotence windows. Time until a request (stats, every shard) is answered.
  while ! $bin/ringmq stats --broker 127.0.0.1:$port > /dev/null 2>&1; do sleep 0.01; done
  serving=$(( ($(date +%s%N) - t0) / 1000000 ))
}
quiet() { i=0; while pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; do i=$((i+1)); [ $i -gt 900 ] && break; sleep 1; done; }
quiet
start; echo "first start: ready line in $ready ms, serving in $serving ms, RSS $(rss $pid) MiB" | tee $out/summary.txt
# 10 topics x 1000 queues, 100 B messages, one message per batch, raw client at full rate for DUR s.
$bin/ringmq-bench run /work/main/bench-harness/workloads/many-queues.toml --broker 127.0.0.1:$port \
  --keep-topics --cpus 1 --quiet --out $out/ingest.json \
  --set client=raw --set message_size_bytes=100 --set batch_max_bytes=256 --set linger_ms=0 \
  --set target_rate=0 --set warmup_s=0 --set duration_s=${DUR:-50} > $out/ingest.txt 2>&1
echo "after ingest: RSS $(rss $pid) MiB, data $(du -sm $d/data | cut -f1) MiB" | tee -a $out/summary.txt
$bin/ringmq stats --broker 127.0.0.1:$port >> $out/summary.txt
# A crash right after the load: recovery scans what the index had not yet persisted.
kill -KILL $pid; wait $pid 2>/dev/null
start; echo "restart after SIGKILL: ready line in $ready ms, serving in $serving ms, RSS $(rss $pid) MiB" | tee -a $out/summary.txt
sleep 3; echo "3 s later: RSS $(rss $pid) MiB" | tee -a $out/summary.txt
sleep 5; echo "8 s later: RSS $(rss $pid) MiB" | tee -a $out/summary.txt
kill -TERM $pid; wait $pid
start; echo "clean restart: ready line in $ready ms, serving in $serving ms, RSS $(rss $pid) MiB" | tee -a $out/summary.txt
sleep 3; echo "3 s later: RSS $(rss $pid) MiB" | tee -a $out/summary.txt
grep -i "recover\|budget\|index\|windows" $d/err.txt | tail -20 > $out/broker-log.txt
kill -TERM $pid; wait $pid
rm -rf $d
