#!/bin/sh
# Round 46: backlog-drain (2 GiB) against a broker tracing every file read
# (`--log-level warn,ringmq::storage::dma_dir=trace`; its log: broker-<label>-<round>.log,
# `python3 reads.py broker-*.log` sums them up). Broker on CPU 0, load generator on CPU 1,
# the data on the loop image, trimmed before each run; fio's sequential read of the same
# image before each drain for comparison, and 8 strided readers of it at depth 2 (each reading
# every eighth 1 MiB block: the drain's 8 queues, about as many reads in flight as the broker
# keeps).
#   OUT=dir DATA=/mnt/r22 ROUNDS=n sh drain-reads.sh "label:build-dir[:k=v,k=v] ..."
# Run from the repository root; build-dir holds ringmq and ringmq-bench of one revision.
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; arms=$1
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
    for a in $arms; do
        l=$(echo "$a" | cut -d: -f1); b=$(echo "$a" | cut -d: -f2)
        ex=$(echo "$a" | cut -d: -f3 | tr ',' ' ')
        rm -rf "$data"/data; fstrim "$data"; sync
        fio --name=seqwrite --filename=$data/fio.test --rw=write --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-write-$l-$r.json
        fio --name=seqread --filename=$data/fio.test --rw=read --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-read-$l-$r.json
        fio --name=strided --filename=$data/fio.test --size=2G --bs=1M --rw=read:7M --numjobs=8 \
            --offset_increment=1M --ioengine=io_uring --iodepth=2 --direct=1 --group_reporting \
            --output-format=json > $out/fio-strided-$l-$r.json
        rm -f $data/fio.test; fstrim "$data"; sync
        printf '[broker]\ncpus = [0]\ndata_dir = "%s/data"\npin = true\nport = 9877\nshards = 1\n[storage]\nflush_mode = "async"\ncache_bytes = 67108864\n' \
            "$data" > "$out/broker.toml"
        "$b"/ringmq --log-level "warn,ringmq::storage::dma_dir=trace" broker --config "$out/broker.toml" > "$out/broker-$l-$r.log" 2>&1 &
        bp=$!
        sleep 2
        set --
        for e in $ex; do set -- "$@" --set "$e"; done
        taskset -c 1 "$b"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --broker 127.0.0.1:9877 \
            --cpus 1 --quiet "$@" --out "$out/$l-$r.json" > "$out/$l-$r.txt" 2>&1
        kill -INT $bp; wait $bp
        fr=$(python3 -c "import json;print(round(json.load(open('$out/fio-read-$l-$r.json'))['jobs'][0]['read']['bw_bytes']/1e6))")
        fs=$(python3 -c "import json;print(round(json.load(open('$out/fio-strided-$l-$r.json'))['jobs'][0]['read']['bw_bytes']/1e6))")
        echo "$r $l fio read $fr MB/s, strided $fs MB/s, $(grep -m1 'backlog drain MB/s' "$out/$l-$r.txt" | tr -s ' ') ($(grep -c 'counts: OK' "$out/$l-$r.txt") OK)"
    done
done
rm -rf "$data"/data; fstrim "$data"
