# usage: prof.sh WORKLOAD OUTPREFIX [extra args]
w=$1; o=$2; shift 2
target/release/ringmq-bench run $w --spawn-broker --broker-cpus 0 --cpus 1 --quiet --out $o.json "$@" > $o.txt 2>&1 &
sleep 5; BP=$(pgrep -f "ringmq-bench run" | head -1); BRK=$(pgrep -f "ringmq broker" | head -1)
perf record -F 999 -g -p $BP -o $o.client.data -- sleep 4 >/dev/null 2>&1 &
perf record -F 999 -g -p $BRK -o $o.broker.data -- sleep 4 >/dev/null 2>&1
wait; grep -E "produce MB|ack p99 us" $o.txt
