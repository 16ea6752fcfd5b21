#!/bin/sh
# Like ../sync-flush-64k/window.sh, with the broker tracing every group commit (its log:
# broker-<arm>-<round>.log; `python3 group-commits.py broker-*.log` sums them up) and
# `perf stat` of the broker as well as of the load generator:
#   OUT=dir DATA=/mnt/r22 ROUNDS=n FLUSH=sync sh timeline.sh "label:build-dir:workload[:k=v,k=v] ..."
# Run from the repository root; build-dir holds ringmq and ringmq-bench of one revision.
out=${OUT:?}; data=${DATA:?}; rounds=${ROUNDS:-1}; flush=${FLUSH:-sync}; arms=$1
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
    for a in $arms; do
        l=$(echo "$a" | cut -d: -f1); b=$(echo "$a" | cut -d: -f2)
        wl=$(echo "$a" | cut -d: -f3); ex=$(echo "$a" | cut -d: -f4 | tr ',' ' ')
        rm -rf "$data"/data; fstrim "$data"; sync
        printf '[broker]\ncpus = [0]\ndata_dir = "%s/data"\npin = true\nport = 9877\nshards = 1\n[storage]\nflush_mode = "%s"\n' \
            "$data" "$flush" > "$out/broker.toml"
        "$b"/ringmq --log-level "warn,ringmq::storage::commit_log::flusher=trace" broker --config "$out/broker.toml" > "$out/broker-$l-$r.log" 2>&1 &
        bp=$!
        sleep 2
        set --
        for e in $ex; do set -- "$@" --set "$e"; done
        perf stat -e task-clock,context-switches -p $bp -o "$out/$l-$r.broker.perfstat" -- sleep 14 &
        pp=$!
        perf stat -e context-switches,task-clock -o "$out/$l-$r.perfstat" -- taskset -c 1 \
            "$b"/ringmq-bench run bench-harness/workloads/"$wl".toml --broker 127.0.0.1:9877 \
            --cpus 1 --quiet --set duration_s=15 "$@" --out "$out/$l-$r.json" > "$out/$l-$r.txt" 2>&1
        wait $pp
        kill -INT $bp; wait $bp
        echo "$r $l $(grep -m1 'produce MB/s' "$out/$l-$r.txt" | tr -s ' ') lg=$(grep task-clock $out/$l-$r.perfstat | awk '{print $1}') broker=$(grep task-clock $out/$l-$r.broker.perfstat | awk '{print $1}') $(grep fsyncs $out/$l-$r.txt | grep -o 'fsyncs [0-9]* ([0-9.]* s)')"
    done
done
rm -rf "$data"/data; fstrim "$data"
