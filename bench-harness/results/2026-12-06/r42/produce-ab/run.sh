#!/bin/bash
# A/B of builds on a journaled ext4 (a loop-mounted image, `losetup --direct-io=on`, mounted
# without discard; trimmed before each run). Broker started by hand (one shard on CPU 0,
# defaults), load generator on CPU 1, 15 s runs, arms interleaved, order reversed every other
# round. One line per run in summary.txt: MB/s, msg/s, ack p50/p99, records per batch (broker
# counters), each CPU's busy share between 5 s and 14 s, the load generator's context switches.
# Setup (root):  truncate -s 40G /work/r33-ext4.img && mkfs.ext4 -q -F /work/r33-ext4.img
#                L=$(losetup --direct-io=on -f --show /work/r33-ext4.img); mount $L /mnt/r22
# Usage: OUT=dir ROUNDS=n ARMS="build@sm build@raw:sm ..." bash run.sh
#   Arms: bNN batched, mqNN many-queues (NN = producer buffer in MiB, 32 the default),
#   sm small-messages, lat latency, sf sync-flush (broker in sync flush mode; sfNN with an NN
#   MiB producer buffer); raw:ARM runs
#   the raw client; build@ARM runs /tmp/ab/build; ARM-gMM sets the producers'
#   small_batches_in_flight_bytes to MM MiB, ARM[-gMM]-mK their buffer_messages to K thousand,
#   ARM-lNN their linger to NN ms, mql the many-queues-linger workload (round 40)
#   (round 34).
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-3}; ARMS=${ARMS:?}; DATA=${DATA:-/mnt/r22/data}
mkdir -p $OUT
busy() { paste $1 $2 | awk -v c=$3 '$1==c {n=NF/2; t=0; for(i=2;i<=n;i++) t+=$(i+n)-$i; idle=($(5+n)-$5)+($(6+n)-$6); printf "%.2f", 1-idle/t}'; }
metric() { awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}' $1; }
ctxt() { cat /proc/$1/task/*/status 2>/dev/null | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {s += $2} END {print s + 0}'; }
cat > $OUT/broker.toml <<T
[broker]
cpus = [0]
data_dir = "$DATA"
pin = true
port = 9877
shards = 1

[storage]
flush_mode = "async"
T
one() { arm=$1; r=$2; tag=$(echo $arm | tr :@ --)-$r; bin=/tmp/ab/${arm%%@*}; arm=${arm#*@}
  CLIENT=""
  case $arm in raw:*) CLIENT="--set client=raw"; arm=${arm#*:} ;; esac
  GATE=""
  case $arm in *-l*) GATE="--set linger_ms=${arm#*-l}"; arm=${arm%-l*} ;; esac
  case $arm in *-m*) GATE="$GATE --set producer_buffer_messages=$((${arm#*-m} * 1000))"; arm=${arm%-m*} ;; esac
  case $arm in *-g*) GATE="$GATE --set producer_small_batches_in_flight_bytes=$((${arm#*-g} << 20))"; arm=${arm%-g*} ;; esac
  case $arm in mql) wl=many-queues-linger; mib=32 ;; b*) wl=batched; mib=${arm#b} ;; mq*) wl=many-queues; mib=${arm#mq} ;;
    sm) wl=small-messages; mib=32 ;; lat) wl=latency; mib=32 ;; sf) wl=sync-flush; mib=32 ;;
    sf*) wl=sync-flush; mib=${arm#sf} ;; esac
  SET="--set duration_s=15 $CLIENT $GATE"
  if [ "$mib" != 32 ]; then
    SET="$SET --set producer_buffer_bytes=$((mib << 20)) --set max_in_flight=$((mib * 2 * 1024))"
  fi
  rm -rf $DATA; fstrim $(dirname $DATA) 2>/dev/null; sync
  CFG=$OUT/broker.toml
  if [ $wl = sync-flush ]; then sed 's/"async"/"sync"/' $OUT/broker.toml > $OUT/broker-sync.toml; CFG=$OUT/broker-sync.toml; fi
  $bin/ringmq broker --config $CFG > $OUT/$tag.broker.log 2>&1 & bp=$!
  for i in $(seq 1 50); do curl -s localhost:9105/metrics >/dev/null 2>&1 && break; sleep 0.2; done
  taskset -c 1 $bin/ringmq-bench run /work/main/bench-harness/workloads/$wl.toml --broker 127.0.0.1:9877 --cpus 1 --quiet $SET --out $OUT/$tag.json > $OUT/$tag.txt 2>&1 & bench=$!
  sleep 5; grep -E '^cpu[01] ' /proc/stat > $OUT/$tag.s0; c0=$(ctxt $bench)
  sleep 9; grep -E '^cpu[01] ' /proc/stat > $OUT/$tag.s1; c1=$(ctxt $bench)
  wait $bench; curl -s localhost:9105/metrics > $OUT/$tag.metrics; kill -INT $bp; wait $bp
  rec=$(metric $OUT/$tag.metrics ringmq_append_records_total); bat=$(metric $OUT/$tag.metrics ringmq_append_batches_total)
  echo "$tag MB/s $(grep -m1 'produce MB/s' $OUT/$tag.txt | awk '{print $3}') msg/s $(grep -m1 'produce msg/s' $OUT/$tag.txt | awk '{print $3}') ack_p50_us $(awk '$1=="ack" && $2=="p50" {print $4}' $OUT/$tag.txt) ack_p99_us $(awk '$1=="ack" && $2=="p99" {print $4}' $OUT/$tag.txt) records/batch $(echo "scale=2; ${rec:-0}/${bat:-1}" | bc) cpu0 $(busy $OUT/$tag.s0 $OUT/$tag.s1 cpu0) cpu1 $(busy $OUT/$tag.s0 $OUT/$tag.s1 cpu1) ctxt/s $(( (c1 - c0) / 9 ))" | tee -a $OUT/summary.txt
}
for r in $(seq 1 $ROUNDS); do
  list=$ARMS; if [ $((r % 2)) = 0 ]; then list=$(echo $ARMS | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for a in $list; do one $a $r; done
done
rm -rf $DATA; fstrim $(dirname $DATA) 2>/dev/null
