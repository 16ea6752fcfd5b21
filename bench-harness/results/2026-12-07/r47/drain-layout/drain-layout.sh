#!/bin/sh
# Round 47: does the disk read the broker's own commit-log files slower than fio's file?
# Per round, on a trimmed filesystem: fio writes a 2 GiB file (1 MiB O_DIRECT blocks),
# filefrag counts its extents, fio reads it sequentially (queue depth 1) and with 8 strided
# readers at depth 2 (each every eighth 1 MiB block: the drain's pattern); the file goes and
# the filesystem is trimmed; then backlog-drain (2 GiB) with the raw client against an external
# broker (CPU 0; the load generator on CPU 1); the broker stops, its data kept; filefrag counts
# the extents of its first two 1 GiB segments, and fio reads their first 1,000 MiB the same two
# ways. Files: fio-*-<label>-<round>.json, seg-*-<label>-<round>.json, frag-<label>-<round>.txt.
#   OUT=dir DATA=/mnt/r22 ROUNDS=n sh drain-layout.sh "label:build-dir[:k=v,k=v] ..."
# Run from the repository root; build-dir holds ringmq and ringmq-bench of one revision.
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; arms=$1
mkdir -p "$out"
bw() { python3 -c "import json;print(round(json.load(open('$1'))['jobs'][0]['read']['bw_bytes']/1e6))"; }
for r in $(seq 1 "$rounds"); do
    for a in $arms; do
        l=$(echo "$a" | cut -d: -f1); b=$(echo "$a" | cut -d: -f2)
        ex=$(echo "$a" | cut -d: -f3 | tr ',' ' ')
        k=$l-$r
        rm -rf "$data"/data; fstrim "$data"; sync
        fio --name=seqwrite --filename=$data/fio.test --rw=write --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-write-$k.json
        echo "fio.test: $(filefrag $data/fio.test)" > $out/frag-$k.txt
        fio --name=seqread --filename=$data/fio.test --rw=read --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-read-$k.json
        fio --name=strided --filename=$data/fio.test --size=2G --bs=1M --rw=read:7M --numjobs=8 \
            --offset_increment=1M --ioengine=io_uring --iodepth=2 --direct=1 --group_reporting \
            --output-format=json > $out/fio-strided-$k.json
        rm -f $data/fio.test; fstrim "$data"; sync
        printf '[broker]\ncpus = [0]\ndata_dir = "%s/data"\npin = true\nport = 9877\nshards = 1\n[storage]\nflush_mode = "async"\ncache_bytes = 67108864\n' \
            "$data" > "$out/broker.toml"
        "$b"/ringmq --log-level warn broker --config "$out/broker.toml" > "$out/broker-$k.log" 2>&1 &
        bp=$!
        sleep 2
        set --
        for e in $ex; do set -- "$@" --set "$e"; done
        taskset -c 1 "$b"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --broker 127.0.0.1:9877 \
            --cpus 1 --quiet "$@" --out "$out/$k.json" > "$out/$k.txt" 2>&1
        kill -INT $bp; wait $bp
        sync; echo 3 > /proc/sys/vm/drop_caches
        segs=$(find "$data"/data -type f -size +1000M | sort | head -2)
        for s in $segs; do echo "$(ls -l $s | awk '{print $5}') $(filefrag $s)" >> $out/frag-$k.txt; done
        s1=$(echo $segs | cut -d' ' -f1)
        fio --name=segread --filename=$s1 --rw=read --bs=1M --size=1000M --direct=1 --readonly --output-format=json > $out/seg-read-$k.json
        fio --name=segstrided --filename=$s1 --size=1000M --bs=1M --rw=read:7M --numjobs=8 \
            --offset_increment=1M --ioengine=io_uring --iodepth=2 --direct=1 --readonly --group_reporting \
            --output-format=json > $out/seg-strided-$k.json
        echo "$r $l fio file read $(bw $out/fio-read-$k.json), strided $(bw $out/fio-strided-$k.json); segment read $(bw $out/seg-read-$k.json), strided $(bw $out/seg-strided-$k.json) MB/s; $(grep -m1 'backlog drain MB/s' "$out/$k.txt" | tr -s ' ') ($(grep -c 'counts: OK' "$out/$k.txt") OK)"
    done
done
rm -rf "$data"/data; fstrim "$data"
