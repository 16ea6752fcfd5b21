#!/bin/bash
# Round 37 (round 36's run-live.sh; only this header and the usage line changed): consumer-group members (the
# push consumer) in the load generator. Copied from round 35's run.sh; same setup as
# round 34 (a journaled ext4 loop image at /mnt/r22, trimmed before each run; broker started
# by hand, one shard on CPU 0; load generator on CPU 1).
# Usage: OUT=dir ROUNDS=n ARMS="build@arm ..." bash run-live.sh
#   Arms (build@ARM runs /tmp/ab/build):
#   d10k-multi-cN / d10k-queue-cN  backlog-drain over 10,000 queues (10 topics x 1000), 2 GiB,
#                                  a 64 MiB chunk cache, N consumers, MultiQueueReader / QueueReader
#   raw:d10k                       the raw client's backlog-drain over 10,000 queues
#   d8-multi / d8-queue            backlog-drain as committed (8 queues, 2 consumers)
#   live-multi / live-queue        many-queues (10,000 queues, 15 s) with one consumer
#   live-group                     the same with the consumer a consumer-group member (push consumer)
#   d10k-group / d8-group          backlog-drain over 10,000 / 8 queues, consumers group members
# One line per run in summary.txt.
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-3}; ARMS=${ARMS:?}; DATA=${DATA:-/mnt/r22/data}
mkdir -p $OUT
metric() { awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}' $1; }
disk_read() { awk '$3=="loop0" {print $6}' /proc/diskstats; }
for cache in 64 256; do cat > $OUT/broker-$cache.toml <<T
[broker]
cpus = [0]
data_dir = "$DATA"
pin = true
port = 9877
shards = 1

[storage]
flush_mode = "async"
cache_bytes = $((cache << 20))
T
done
one() { arm=$1; r=$2; tag=$(echo $arm | tr :@ --)-$r; bin=/tmp/ab/${arm%%@*}; arm=${arm#*@}
  CLIENT=""; case $arm in raw:*) CLIENT="--set client=raw"; arm=${arm#*:} ;; esac
  MULTI=""; case $arm in *-multi*) MULTI="--set consumer_fetch_multi=true" ;; *-queue*) MULTI="--set consumer_fetch_multi=false" ;; esac
  CONS=""; case $arm in *-c*) CONS="--set consumers=${arm##*-c}" ;; esac
  case $arm in *-group*) CONS="$CONS --set consumer_group=true" ;; esac
  case $arm in
    d10k*) wl=backlog-drain; cache=64; SET="--set topics=10 --set queues_per_topic=1000 --set drain_timeout_s=300" ;;
    d8*) wl=backlog-drain; cache=64; SET="" ;;
    live*) wl=many-queues; cache=256; SET="--set duration_s=15 --set consumers=1" ;;
  esac
  rm -rf $DATA; fstrim $(dirname $DATA) 2>/dev/null; sync
  $bin/ringmq broker --config $OUT/broker-$cache.toml > $OUT/$tag.broker.log 2>&1 & bp=$!
  for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
  d0=$(disk_read)
  taskset -c 1 $bin/ringmq-bench run /work/main/bench-harness/workloads/$wl.toml --broker 127.0.0.1:9877 --cpus 1 --quiet $SET $CLIENT $MULTI $CONS --out $OUT/$tag.json > $OUT/$tag.txt 2>&1
  d1=$(disk_read)
  curl -s localhost:9105/metrics > $OUT/$tag.metrics; kill -INT $bp; wait $bp
  fetches=$(metric $OUT/$tag.metrics ringmq_fetch_requests_total)
  if [ $wl = backlog-drain ]; then
    echo "$tag drain_MB/s $(grep -m1 'drain MB/s' $OUT/$tag.txt | awk '{print $4}') build_MB/s $(grep -m1 'build MB/s' $OUT/$tag.txt | awk '{print $4}') disk_read_MB $(( (d1 - d0) / 2048 )) fetch_requests $fetches $(grep -m1 'counts' $OUT/$tag.txt | tr -s ' ')" | tee -a $OUT/summary.txt
  else
    echo "$tag produce_MB/s $(grep -m1 'produce MB/s' $OUT/$tag.txt | awk '{print $3}') consume_MB/s $(grep -m1 'consume MB/s' $OUT/$tag.txt | awk '{print $3}') e2e_p50_us $(awk '$1=="e2e" && $2=="p50" {print $4}' $OUT/$tag.txt) e2e_p99_us $(awk '$1=="e2e" && $2=="p99" {print $4}' $OUT/$tag.txt) disk_read_MB $(( (d1 - d0) / 2048 )) fetch_requests $fetches $(grep -m1 'counts' $OUT/$tag.txt | tr -s ' ')" | tee -a $OUT/summary.txt
  fi
}
for r in $(seq 1 $ROUNDS); do
  list=$ARMS; if [ $((r % 2)) = 0 ]; then list=$(echo $ARMS | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for a in $list; do one $a $r; done
done
