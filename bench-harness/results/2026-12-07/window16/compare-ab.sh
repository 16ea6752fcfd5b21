#!/bin/sh
# Interleaved `--compare-raw` sessions (library then raw on one spawned broker) of several
# builds: broker on CPU 0, load generator on CPU 1, data emptied and trimmed before each.
#   OUT=dir DATA=/mnt/r22 ROUNDS=n sh compare-ab.sh "label:build-dir:workload[:k=v,k=v] ..."
# Run from the repository root; build-dir holds ringmq and ringmq-bench of one revision.
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; arms=$1
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
    for a in $arms; do
        l=$(echo "$a" | cut -d: -f1); b=$(echo "$a" | cut -d: -f2)
        wl=$(echo "$a" | cut -d: -f3); ex=$(echo "$a" | cut -d: -f4 | tr ',' ' ')
        rm -rf "$data"/data/*; fstrim "$data"; sync
        set --
        for e in $ex; do set -- "$@" --set "$e"; done
        "$b"/ringmq-bench run bench-harness/workloads/"$wl".toml --compare-raw --spawn-broker \
            --data-dir "$data"/data --broker-cpus 0 --cpus 1 --quiet "$@" \
            --out "$out/$l-$r.json" > "$out/$l-$r.txt" 2>&1
        echo "$r $l $(grep -m1 'library/raw: produce MB/s' "$out/$l-$r.txt")"
    done
done
rm -rf "$data"/data/*; fstrim "$data"
