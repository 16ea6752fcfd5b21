#!/bin/bash
# Round 37 (round 36's run.sh, its scratch directory renamed): the push consumer's group drain
# and rebalance pause, before and after its worker channel was bounded by bytes.
# OUT=dir ROUNDS=n ARMS="name@bindir:queues ..." bash run-drain.sh
# Each arm: a fresh broker (1 shard, CPU 0, default config) and `ringmq-bench group` on CPU 1
# preloading $MESSAGES messages of $SIZE bytes round robin over `queues` queues, then draining
# them with new groups of $MEMBERS members (every member on CPU 1), then the rebalance pause.
set -u
out=${OUT:?}; rounds=${ROUNDS:-3}; messages=${MESSAGES:-2000000}; size=${SIZE:-100}
members=${MEMBERS:-1,2,4}
mkdir -p "$out"
quiet() { i=0; while pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; do i=$((i+1)); [ $i -gt 900 ] && break; sleep 1; done; }
for round in $(seq 1 "$rounds"); do
  for arm in ${ARMS:?}; do
    name=${arm%%@*}; rest=${arm#*@}; bin=${rest%%:*}; queues=${rest#*:}
    quiet
    d=$(mktemp -d /work/bench-r37.XXXX); port=19936
    taskset -c 0 "$bin/ringmq" broker --port $port --shards 1 --data-dir "$d/data" > "$d/out.txt" 2> "$d/err.txt" &
    pid=$!
    i=0; while ! grep -q ready "$d/out.txt" 2>/dev/null; do i=$((i+1)); [ $i -gt 600 ] && { cat "$d/err.txt"; exit 1; }; sleep 0.05; done
    taskset -c 1 "$bin/ringmq-bench" group --broker 127.0.0.1:$port --members "$members" \
      --queues "$queues" --messages "$messages" --message-size "$size" --rebalance-rate 20000 \
      --out "$out/$name-r$round.json" > "$out/$name-r$round.txt" 2>&1
    echo "$name r$round: $(grep -E 'member|pause' "$out/$name-r$round.txt" | tr '\n' ' ')"
    kill -TERM $pid; wait $pid
    rm -rf "$d"
  done
done
