#!/bin/sh
# backlog-drain --compare-raw with prefetching on (the default, prefetch_bytes = 32 MiB) and off
# (--set storage.prefetch_bytes=0), one build, arms alternating which goes first per round,
# fio's O_DIRECT 1 MiB sequential read (iodepth 32) of a 2 GiB file (FIO_SIZE) at the start of
# each round.
# Broker on CPU 0, load generator on CPU 1. Run from the repository root:
#   OUT=dir FIRST=1 LAST=4 BIN=/tmp/ab/pf [EXTRA="--set fetch_max_bytes=1048576"] sh ab.sh
# BIN holds release builds of ringmq and ringmq-bench side by side. ON=BYTES runs the "on" arm
# at prefetch_bytes = BYTES instead of the build's default, labelled on16 for 16 MiB (onN for
# N MiB). FIO_SIZE (default 2G) is the size of fio's file: give it the backlog's size when
# EXTRA sets backlog_bytes.
set -u
out=$OUT
"$BIN/ringmq" --version > "$out/version.txt"
for i in $(seq "$FIRST" "$LAST"); do
  fio --name=seqread --filename=/work/fio.test --rw=read --bs=1M --size=${FIO_SIZE:-2G} --direct=1 \
      --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json \
      > "$out/fio-read-$i.json" 2>/dev/null
  rm -f /work/fio.test
  fioread=$(python3 -c "import json;print(round(json.load(open('$out/fio-read-$i.json'))['jobs'][0]['read']['bw_bytes']/1e6))")
  on=on${ON:+$((ON / 1048576))}
  if [ $((i % 2)) = 1 ]; then arms="$on off"; else arms="off $on"; fi
  for a in $arms; do
    if [ "$a" = off ]; then set -- --set storage.prefetch_bytes=0
    elif [ -n "${ON:-}" ]; then set -- --set storage.prefetch_bytes="$ON"
    else set --; fi
    echo "$(date -u +%T) $a-$i load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
    "$BIN/ringmq-bench" run bench-harness/workloads/backlog-drain.toml --spawn-broker \
        --broker-cpus 0 --cpus 1 --quiet --compare-raw "$@" ${EXTRA:-} \
        --out "$out/$a-$i.json" > "$out/$a-$i.txt" 2>&1
    echo "$a-$i fio=$fioread $(grep 'library/raw:' "$out/$a-$i.txt")" | tee -a "$out/summary.txt"
  done
done
