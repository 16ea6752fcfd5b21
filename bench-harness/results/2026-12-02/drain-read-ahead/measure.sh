#!/bin/sh
# backlog-drain, library and raw (--compare-raw), arms interleaved per round, with fio's
# sequential read of the same disk at the start of each round. Run from the repository root.
# Each arm is label:dir, dir holding release builds of ringmq and ringmq-bench side by side
# (each bench spawns its own broker). Broker on CPU 0, load generator on CPU 1.
#   rounds 1-2: sh measure.sh                      (before = b0bc122, after = 362d2be:
#                                                   read-ahead only when a fetch is one run)
#   rounds 3-4: FIRST=3 ROUNDS=4 ARMS="after:/tmp/ab/after rawpipe:/tmp/ab/after2" sh measure.sh
#               (rawpipe: the bench at 14acd25, its raw consumer with a fetch per queue in
#               flight, against the same 362d2be broker)
# OUT=dir writes the reports there instead of next to this script.
set -u
out=${OUT:-$(dirname "$0")}
w=bench-harness/workloads
arms=${ARMS:-before:/tmp/ab/before after:/tmp/ab/after}
for i in $(seq "${FIRST:-1}" "${ROUNDS:-2}"); do
    fio --name=seqread --filename=/work/fio.test --rw=read --bs=1M --size=2G --direct=1 \
        --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json \
        > "$out/fio-read-$i.json" 2>/dev/null
    rm -f /work/fio.test
    for arm in $arms; do
        label=${arm%%:*}-$i; bin=${arm#*:}
        echo "$(date -u +%T) $label load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
        "$bin/ringmq-bench" run "$w/backlog-drain.toml" --spawn-broker --broker-cpus 0 --cpus 1 \
            --quiet --compare-raw --out "$out/$label.json" > "$out/$label.txt" 2>&1 \
            || echo "   ($label exit $?)" >&2
    done
done
