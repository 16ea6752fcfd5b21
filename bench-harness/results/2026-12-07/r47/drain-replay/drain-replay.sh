#!/bin/sh
# Round 47: fio replays the broker's own drain reads. Per round, on a trimmed filesystem:
# backlog-drain (2 GiB, raw client) against an external broker tracing its file reads
# (`--log-level warn,ringmq::storage::dma_dir=trace`; CPU 0, load generator on CPU 1); the
# broker stops, its data kept, the page cache dropped; iolog.py turns the traced reads into a
# fio iolog over the segment files (replay-<k>.iolog, gzipped); fio replays it with io_uring at
# queue depth 16 and 4 (about the broker's mean reads in flight, and fewer), as fast as it can
# (replay_no_stall), and reads the first 1,000 MiB of the first segment sequentially at
# depth 1. Same disk, same files, same reads: what is left between the drain and the replay
# is how the broker issues them.
#   OUT=dir DATA=/mnt/r22 ROUNDS=n sh drain-replay.sh "label:build-dir[:k=v,k=v] ..."
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; arms=$1; here=$(dirname "$0")
mkdir -p "$out"
bw() { python3 -c "import json;print(round(json.load(open('$1'))['jobs'][0]['read']['bw_bytes']/1e6))"; }
for r in $(seq 1 "$rounds"); do
    for a in $arms; do
        l=$(echo "$a" | cut -d: -f1); b=$(echo "$a" | cut -d: -f2)
        ex=$(echo "$a" | cut -d: -f3 | tr ',' ' ')
        k=$l-$r
        rm -rf "$data"/data; fstrim "$data"; sync
        printf '[broker]\ncpus = [0]\ndata_dir = "%s/data"\npin = true\nport = 9877\nshards = 1\n[storage]\nflush_mode = "async"\ncache_bytes = 67108864\n' \
            "$data" > "$out/broker.toml"
        "$b"/ringmq --log-level "warn,ringmq::storage::dma_dir=trace" broker --config "$out/broker.toml" > /tmp/broker-$k.log 2>&1 &
        bp=$!
        sleep 2
        set --
        for e in $ex; do set -- "$@" --set "$e"; done
        taskset -c 1 "$b"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --broker 127.0.0.1:9877 \
            --cpus 1 --quiet "$@" --out "$out/$k.json" > "$out/$k.txt" 2>&1
        kill -INT $bp; wait $bp
        segs=$(find "$data"/data -type f -name '*.log' -size +1000M | sort)
        python3 "$here"/iolog.py /tmp/broker-$k.log $segs > /tmp/replay-$k.iolog
        gzip -c /tmp/replay-$k.iolog > $out/replay-$k.iolog.gz
        for d in 16 4; do
            sync; echo 3 > /proc/sys/vm/drop_caches
            fio --name=replay --read_iolog=/tmp/replay-$k.iolog --replay_no_stall=1 --ioengine=io_uring \
                --iodepth=$d --direct=1 --readonly --output-format=json > $out/replay-qd$d-$k.json
        done
        s1=$(echo $segs | cut -d' ' -f1)
        fio --name=segread --filename=$s1 --rw=read --bs=1M --size=1000M --direct=1 --readonly --output-format=json > $out/seg-read-$k.json
        echo "$r $l $(grep -m1 'backlog drain MB/s' "$out/$k.txt" | tr -s ' ') ($(grep -c 'counts: OK' "$out/$k.txt") OK); replay qd16 $(bw $out/replay-qd16-$k.json), qd4 $(bw $out/replay-qd4-$k.json); segment sequential $(bw $out/seg-read-$k.json) MB/s"
        rm -f /tmp/broker-$k.log /tmp/replay-$k.iolog
    done
done
rm -rf "$data"/data; fstrim "$data"
