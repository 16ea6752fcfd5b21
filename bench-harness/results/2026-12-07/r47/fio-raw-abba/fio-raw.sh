#!/bin/sh
# Round 47: fio's sequential read and the raw backlog-drain, alternating, the order reversed
# every round (fio then drain, drain then fio, ...), each run on an emptied, trimmed
# filesystem: a drain right after fio's run drained faster than one right after another drain
# (../order/), so neither always goes first. fio writes a fresh 2 GiB file (1 MiB O_DIRECT
# blocks) and reads it back at queue depth 1 (fio-read-<round>.json) and with io_uring at
# depth 16 (fio-qd16-<round>.json); the drain spawns the broker on CPU 0, the load generator
# on CPU 1.
# SETTLE=s waits s seconds before each run (default 0): a drain started within seconds of the
# previous run drained slower than one started 20 s later (the disk still busy with what the
# previous run wrote, it seems).
#   OUT=dir DATA=/mnt/r22 B=build-dir ROUNDS=n [SETTLE=s] sh fio-raw.sh
# Run from the repository root; build-dir holds ringmq and ringmq-bench of one revision.
out=${OUT:?}; data=${DATA:?}; b=${B:?}; rounds=${ROUNDS:-1}; settle=${SETTLE:-0}
mkdir -p "$out"
bw() { python3 -c "import json;print(round(json.load(open('$1'))['jobs'][0]['read']['bw_bytes']/1e6))"; }
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) = 1 ]; then order="fio raw"; else order="raw fio"; fi
    line="$r ($order):"
    for arm in $order; do
        rm -rf "$data"/data "$data"/fio.test; fstrim "$data"; sync
        sleep "$settle"
        if [ $arm = fio ]; then
            fio --name=seqwrite --filename=$data/fio.test --rw=write --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-write-$r.json
            fio --name=seqread --filename=$data/fio.test --rw=read --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-read-$r.json
            fio --name=seqread-qd16 --filename=$data/fio.test --rw=read --bs=1M --size=2G --direct=1 --ioengine=io_uring \
                --iodepth=16 --output-format=json > $out/fio-qd16-$r.json
            line="$line fio read $(bw $out/fio-read-$r.json) (qd16 $(bw $out/fio-qd16-$r.json))"
        else
            "$b"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --spawn-broker \
                --data-dir "$data"/data --broker-cpus 0 --cpus 1 --quiet --set client=raw \
                --out "$out/raw-$r.json" > "$out/raw-$r.txt" 2>&1
            line="$line raw drain $(awk '$1=="backlog" && $2=="drain" && $3=="MB/s" {print $4}' "$out/raw-$r.txt") ($(grep -c 'counts: OK' "$out/raw-$r.txt") OK)"
        fi
    done
    echo "$line" | tee -a "$out/summary.txt"
done
rm -rf "$data"/data "$data"/fio.test; fstrim "$data"
