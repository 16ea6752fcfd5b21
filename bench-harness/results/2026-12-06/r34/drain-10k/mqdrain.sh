#!/bin/sh
# mqdrain.sh BUILD CLIENT [extra --set...]: backlog-drain over 10,000 queues against a hand-started broker; fetch counters
b=$1; c=$2; shift 2
rm -rf /mnt/r22/data; fstrim /mnt/r22; sync
/tmp/ab/$b/ringmq broker --config /tmp/r34/drain-broker.toml > /tmp/r34/mqd-broker.log 2>&1 & bp=$!
sleep 2
curl -s localhost:9105/metrics > /tmp/r34/mqd-m0
d0=$(awk "\$3==\"loop0\" {print \$6}" /proc/diskstats)
taskset -c 1 /tmp/ab/$b/ringmq-bench run bench-harness/workloads/backlog-drain.toml --broker 127.0.0.1:9877 --cpus 1 --quiet --set client=$c --set topics=10 --set queues_per_topic=1000 --set drain_timeout_s=300 "$@" --out /tmp/r34/mqd-$c.json > /tmp/r34/mqd-$c.txt 2>&1
curl -s localhost:9105/metrics > /tmp/r34/mqd-m1-$c
d1=$(awk "\$3==\"loop0\" {print \$6}" /proc/diskstats); echo "disk read MB $(( (d1 - d0) / 2048 ))"
kill -INT $bp; wait $bp
grep "drain MB\|build MB\|counts" /tmp/r34/mqd-$c.txt
grep -v "^#" /tmp/r34/mqd-m1-$c | grep -i "fetch" | grep -v "_bucket\|_sum\|_count" | head -20
