#!/bin/sh
# Round 48: backlog-drain of two builds with the library client, alternating, the order
# reversed every round (A B, B A, ...): broker spawned on CPU 0, load generator on CPU 1, data
# emptied and trimmed before each run, SETTLE seconds of rest before each.
#   OUT=dir DATA=/mnt/r22 ROUNDS=n [SETTLE=s] sh ab.sh "labelA:build-dir" "labelB:build-dir" [k=v ...]
# Run from the repository root; build-dir holds ringmq and ringmq-bench of one revision; k=v
# are workload overrides (e.g. queues_per_topic=1 consumers=1).
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; settle=${SETTLE:-0}; a=$1; b=$2; shift 2
mkdir -p "$out"
ex=""
for e in "$@"; do ex="$ex --set $e"; done
for r in $(seq 1 "$rounds"); do
    line="$r"
    if [ $((r % 2)) = 1 ]; then arms="$a $b"; else arms="$b $a"; fi
    for arm in $arms; do
        l=$(echo "$arm" | cut -d: -f1); bd=$(echo "$arm" | cut -d: -f2)
        rm -rf "$data"/data; fstrim "$data"; sync
        sleep "$settle"
        # shellcheck disable=SC2086
        "$bd"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --spawn-broker \
            --data-dir "$data"/data --broker-cpus 0 --cpus 1 --quiet $ex \
            --out "$out/$l-$r.json" > "$out/$l-$r.txt" 2>&1
        line="$line $l $(awk '$1=="backlog" && $2=="drain" && $3=="MB/s" {print $4}' "$out/$l-$r.txt") ($(grep -c 'counts: OK' "$out/$l-$r.txt") OK)"
    done
    echo "$line" | tee -a "$out/summary.txt"
done
rm -rf "$data"/data; fstrim "$data"
