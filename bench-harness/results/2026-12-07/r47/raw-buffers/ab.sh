#!/bin/sh
# Round 47: the raw backlog-drain of two builds, alternating, the order reversed every round
# (A B, B A, ...): broker spawned on CPU 0, load generator on CPU 1, data emptied and trimmed
# before each run; before each round fio writes a 2 GiB file and reads it back sequentially
# (1 MiB, queue depth 1) for the disk's rate at that moment (fio-read-<round>.json).
# SETTLE=s waits s seconds before each drain (default 0; see ../fio-raw-abba/fio-raw.sh).
#   OUT=dir DATA=/mnt/r22 ROUNDS=n [SETTLE=s] sh ab.sh "labelA:build-dir" "labelB:build-dir" [k=v ...]
# Run from the repository root; build-dir holds ringmq and ringmq-bench of one revision.
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; settle=${SETTLE:-0}; a=$1; b=$2; shift 2
mkdir -p "$out"
ex=""
for e in "$@"; do ex="$ex --set $e"; done
for r in $(seq 1 "$rounds"); do
    rm -rf "$data"/data; fstrim "$data"; sync
    fio --name=seqwrite --filename=$data/fio.test --rw=write --bs=1M --size=2G --direct=1 --output-format=json > /dev/null
    fio --name=seqread --filename=$data/fio.test --rw=read --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-read-$r.json
    rm -f $data/fio.test
    fr=$(python3 -c "import json;print(round(json.load(open('$out/fio-read-$r.json'))['jobs'][0]['read']['bw_bytes']/1e6))")
    line="$r fio read $fr;"
    if [ $((r % 2)) = 1 ]; then arms="$a $b"; else arms="$b $a"; fi
    for arm in $arms; do
        l=$(echo "$arm" | cut -d: -f1); bd=$(echo "$arm" | cut -d: -f2)
        rm -rf "$data"/data; fstrim "$data"; sync
        sleep "$settle"
        # shellcheck disable=SC2086
        "$bd"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --spawn-broker \
            --data-dir "$data"/data --broker-cpus 0 --cpus 1 --quiet --set client=raw $ex \
            --out "$out/$l-$r.json" > "$out/$l-$r.txt" 2>&1
        line="$line $l $(awk '$1=="backlog" && $2=="drain" && $3=="MB/s" {print $4}' "$out/$l-$r.txt") ($(grep -c 'counts: OK' "$out/$l-$r.txt") OK)"
    done
    echo "$line" | tee -a "$out/summary.txt"
done
rm -rf "$data"/data; fstrim "$data"
