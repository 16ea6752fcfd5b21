#!/bin/sh
# Round 48: backlog-drain of one build, library client, with and without FETCH_NEXT
# (consumer_fetch_next), alternating, the order reversed every round; broker spawned on CPU 0,
# load generator on CPU 1, data emptied and trimmed before each run, SETTLE seconds of rest.
#   OUT=dir DATA=/mnt/r22 ROUNDS=n [SETTLE=s] sh ab.sh build-dir [k=v ...]
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; settle=${SETTLE:-0}; bd=$1; shift
mkdir -p "$out"
ex=""
for e in "$@"; do ex="$ex --set $e"; done
for r in $(seq 1 "$rounds"); do
    line="$r"
    if [ $((r % 2)) = 1 ]; then arms="next:true one:false"; else arms="one:false next:true"; fi
    for arm in $arms; do
        l=$(echo "$arm" | cut -d: -f1); v=$(echo "$arm" | cut -d: -f2)
        rm -rf "$data"/data; fstrim "$data"; sync
        sleep "$settle"
        # shellcheck disable=SC2086
        "$bd"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --spawn-broker \
            --data-dir "$data"/data --broker-cpus 0 --cpus 1 --quiet $ex --set consumer_fetch_next=$v \
            --out "$out/$l-$r.json" > "$out/$l-$r.txt" 2>&1
        line="$line $l $(awk '$1=="backlog" && $2=="drain" && $3=="MB/s" {print $4}' "$out/$l-$r.txt") ($(grep -c 'counts: OK' "$out/$l-$r.txt") OK)"
    done
    echo "$line" | tee -a "$out/summary.txt"
done
rm -rf "$data"/data; fstrim "$data"
