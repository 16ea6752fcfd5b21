#!/bin/sh
# As ab.sh, with the "on" arm at prefetch_bytes = 16 MiB (--set storage.prefetch_bytes=16777216):
#   OUT=dir FIRST=1 LAST=2 BIN=/tmp/ab/pf sh ab16.sh
set -u
out=$OUT
"$BIN/ringmq" --version > "$out/version.txt"
for i in $(seq "$FIRST" "$LAST"); do
  fio --name=seqread --filename=/work/fio.test --rw=read --bs=1M --size=2G --direct=1 \
      --ioengine=io_uring --iodepth=32 --group_reporting --output-format=json \
      > "$out/fio-read-$i.json" 2>/dev/null
  rm -f /work/fio.test
  fioread=$(python3 -c "import json;print(round(json.load(open('$out/fio-read-$i.json'))['jobs'][0]['read']['bw_bytes']/1e6))")
  if [ $((i % 2)) = 1 ]; then arms="on16 off"; else arms="off on16"; fi
  for a in $arms; do
    if [ "$a" = off ]; then p=0; else p=16777216; fi
    echo "$(date -u +%T) $a-$i load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/loadavg.txt"
    "$BIN/ringmq-bench" run bench-harness/workloads/backlog-drain.toml --spawn-broker \
        --broker-cpus 0 --cpus 1 --quiet --compare-raw --set storage.prefetch_bytes=$p \
        --out "$out/$a-$i.json" > "$out/$a-$i.txt" 2>&1
    echo "$a-$i fio=$fioread $(grep 'library/raw:' "$out/$a-$i.txt")" | tee -a "$out/summary.txt"
  done
done
