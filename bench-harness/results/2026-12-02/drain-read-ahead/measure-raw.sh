#!/bin/sh
# Follow-up: the raw consumer with one fetch per queue in flight (after2: raw.rs at the commit
# after 362d2be) against the synchronous raw consumer (after = 362d2be), same broker build
# (362d2be). backlog-drain --compare-raw, interleaved per round, fio read first.
set -u
out=$(dirname "$0")
w=bench-harness/workloads
one() { # label bin
    echo "$(date -u +%T) $1 load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
    "$2/ringmq-bench" run "$w/backlog-drain.toml" --spawn-broker --broker-cpus 0 --cpus 1 \
        --quiet --compare-raw --out "$out/$1.json" > "$out/$1.txt" 2>&1 || echo "   ($1 exit $?)" >&2
}
for i in $(seq "${FIRST:-3}" "${ROUNDS:-4}"); do
    fio --name=seqread --filename=/work/fio.test --rw=read --bs=1M --size=2G --direct=1 \
        --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json \
        > "$out/fio-read-$i.json" 2>/dev/null
    rm -f /work/fio.test
    one after-$i /tmp/ab/after
    one rawpipe-$i /tmp/ab/after2
done
