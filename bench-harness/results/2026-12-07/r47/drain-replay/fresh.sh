#!/bin/sh
# Round 47: the broker's drain reads replayed by fio on a fresh file, not on the segments the
# drain has just read (which the VM's disk may serve from its host's cache). Per round, on a
# trimmed filesystem: backlog-drain (2 GiB, raw client) against an external broker tracing its
# file reads (CPU 0, load generator on CPU 1); its data removed and the filesystem trimmed; fio
# writes a fresh 3 GiB file (1 MiB O_DIRECT blocks), replays the traced reads on it at the same
# offsets (segment n at n GiB; io_uring, queue depth 16, then 4, replay_no_stall), then reads it
# sequentially at depth 1 and 16. Each replay reads data written, not yet read, as the drain did.
#   OUT=dir DATA=/mnt/r22 ROUNDS=n sh fresh.sh "label:build-dir[:k=v,k=v] ..."
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
            --cpus 1 --quiet "$@" --out "$out/fresh-$k.json" > "$out/fresh-$k.txt" 2>&1
        kill -INT $bp; wait $bp
        python3 "$here"/iolog.py /tmp/broker-$k.log /s0 /s1 /s2 | awk -v f="$data/fio.test" '
            $2 == "read" { n = substr($1, 3) + 0; print f, "read", $3 + n * 1073741824, $4; next }
            $1 == "/s0" { print f, $2 } { if ($1 !~ /^\/s/) print }' > /tmp/fresh-$k.iolog
        gzip -c /tmp/fresh-$k.iolog > $out/fresh-$k.iolog.gz
        rm -rf "$data"/data; fstrim "$data"; sync
        fio --name=seqwrite --filename=$data/fio.test --rw=write --bs=1M --size=3G --direct=1 --output-format=json > $out/fresh-write-$k.json
        for d in 16 4; do
            fio --name=replay --read_iolog=/tmp/fresh-$k.iolog --replay_no_stall=1 --ioengine=io_uring \
                --iodepth=$d --direct=1 --readonly --output-format=json > $out/fresh-replay-qd$d-$k.json
        done
        fio --name=seqread --filename=$data/fio.test --rw=read --bs=1M --size=2G --direct=1 --output-format=json > $out/fresh-read-qd1-$k.json
        fio --name=seqread --filename=$data/fio.test --rw=read --bs=1M --size=2G --ioengine=io_uring --iodepth=16 \
            --direct=1 --output-format=json > $out/fresh-read-qd16-$k.json
        echo "$r $l $(grep -m1 'backlog drain MB/s' "$out/fresh-$k.txt" | tr -s ' ') ($(grep -c 'counts: OK' "$out/fresh-$k.txt") OK); replay on a fresh file qd16 $(bw $out/fresh-replay-qd16-$k.json), then qd4 $(bw $out/fresh-replay-qd4-$k.json); sequential qd1 $(bw $out/fresh-read-qd1-$k.json), qd16 $(bw $out/fresh-read-qd16-$k.json) MB/s"
        rm -f /tmp/broker-$k.log /tmp/fresh-$k.iolog $data/fio.test
    done
done
rm -rf "$data"/data; fstrim "$data"
