#!/bin/sh
# backlog-drain, library and raw (--compare-raw), with the workload's 4 MiB fetches and with
# 16 MiB fetches, interleaved per round, after fio's O_DIRECT 1 MiB sequential read (iodepth 32)
# of the same disk. Run from the repository root after `cargo build --release --workspace --bins`.
# Broker on CPU 0, load generator on CPU 1.   OUT=dir: reports there, not next to this script.
set -u
out=${OUT:-$(dirname "$0")}
bench=${BENCH:-target/release/ringmq-bench}
for i in $(seq 1 "${ROUNDS:-3}"); do
    fio --name=seqread --filename=/work/fio.test --rw=read --bs=1M --size=2G --direct=1 \
        --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json \
        > "$out/fio-read-$i.json" 2>/dev/null
    rm -f /work/fio.test
    for fetch in 4194304 16777216; do
        label=fetch-$fetch-$i
        echo "$(date -u +%T) $label load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
        "$bench" run bench-harness/workloads/backlog-drain.toml --spawn-broker --broker-cpus 0 \
            --cpus 1 --quiet --compare-raw --set fetch_max_bytes=$fetch \
            --out "$out/$label.json" > "$out/$label.txt" 2>&1 || echo "   ($label exit $?)" >&2
    done
done
