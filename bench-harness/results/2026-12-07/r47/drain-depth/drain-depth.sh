#!/bin/sh
# Round 47: how many reads the block devices hold for fio and for the broker's drain.
# A sampler copies the loop device's and the VM disk's /proc/diskstats lines every 50 ms
# (stats-<label>-<round>.txt, each line prefixed by the time); marks-<label>-<round>.txt holds
# each phase's start and end. Phases per round, on a trimmed filesystem: fio writes a 2 GiB
# file, reads it sequentially (queue depth 1) and with 8 strided readers at depth 2 (each every
# eighth 1 MiB block); then backlog-drain (2 GiB, raw client) against an external broker
# (CPU 0; load generator on CPU 1). depth.py turns the samples into each phase's reads per
# second, mean request size, mean read time and mean reads in the device (read time summed
# over the phase / its length); for the drain, the samples where reads run and writes do not.
#   OUT=dir DATA=/mnt/r22 DEVS="loop0 vda" ROUNDS=n sh drain-depth.sh "label:build-dir[:k=v]"
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; arms=$1; devs=${DEVS:-"loop0 vda"}
mkdir -p "$out"
pat=$(for d in $devs; do printf ' %s |' "$d"; done | sed 's/|$//')
for r in $(seq 1 "$rounds"); do
    for a in $arms; do
        l=$(echo "$a" | cut -d: -f1); b=$(echo "$a" | cut -d: -f2)
        ex=$(echo "$a" | cut -d: -f3 | tr ',' ' ')
        k=$l-$r; m=$out/marks-$k.txt; : > $m
        mark() { echo "$(date +%s.%N) $1" >> $m; }
        rm -rf "$data"/data; fstrim "$data"; sync
        (while :; do t=$(date +%s.%N); grep -E "$pat" /proc/diskstats | sed "s/^/$t /"; sleep 0.05; done) > $out/stats-$k.txt &
        sp=$!
        fio --name=seqwrite --filename=$data/fio.test --rw=write --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-write-$k.json
        mark "fio-read start"
        fio --name=seqread --filename=$data/fio.test --rw=read --bs=1M --size=2G --direct=1 --output-format=json > $out/fio-read-$k.json
        mark "fio-read end"; mark "fio-strided start"
        fio --name=strided --filename=$data/fio.test --size=2G --bs=1M --rw=read:7M --numjobs=8 \
            --offset_increment=1M --ioengine=io_uring --iodepth=2 --direct=1 --group_reporting \
            --output-format=json > $out/fio-strided-$k.json
        mark "fio-strided end"
        rm -f $data/fio.test; fstrim "$data"; sync
        printf '[broker]\ncpus = [0]\ndata_dir = "%s/data"\npin = true\nport = 9877\nshards = 1\n[storage]\nflush_mode = "async"\ncache_bytes = 67108864\n' \
            "$data" > "$out/broker.toml"
        "$b"/ringmq --log-level warn broker --config "$out/broker.toml" > "$out/broker-$k.log" 2>&1 &
        bp=$!
        sleep 2
        set --
        for e in $ex; do set -- "$@" --set "$e"; done
        mark "drain start"
        taskset -c 1 "$b"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --broker 127.0.0.1:9877 \
            --cpus 1 --quiet "$@" --out "$out/$k.json" > "$out/$k.txt" 2>&1
        mark "drain end"
        kill -INT $bp; wait $bp
        kill $sp; wait $sp 2>/dev/null
        echo "$r $l $(grep -m1 'backlog drain MB/s' "$out/$k.txt" | tr -s ' ') ($(grep -c 'counts: OK' "$out/$k.txt") OK)"
    done
done
rm -rf "$data"/data; fstrim "$data"
