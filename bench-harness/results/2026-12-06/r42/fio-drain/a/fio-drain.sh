#!/bin/bash
# Round 42: raw backlog-drain against fio's sequential read of the same filesystem, in the same
# session, alternating: fio (write 2 GiB O_DIRECT 1 MiB, then read it back), then backlog-drain
# --compare-raw (broker spawned on CPU 0, load generator on CPU 1), ROUNDS times.
# Data on a journaled ext4 loop image (`losetup --direct-io=on`), trimmed before each run.
# Usage: OUT=dir ROUNDS=n B=build bash fio-drain.sh   (binaries in /tmp/ab/<build>/)
set -u
OUT=${OUT:?}; ROUNDS=${ROUNDS:-3}; DATA=${DATA:-/mnt/r22/data}; B=${B:-head}
mkdir -p $OUT $DATA
for r in $(seq 1 $ROUNDS); do
  fstrim $(dirname $DATA) 2>/dev/null; sync
  fio --name=seqwrite --filename=$DATA/fio.test --rw=write --bs=1M --size=2G --direct=1 --output-format=json > $OUT/fio-write-$r.json
  fio --name=seqread --filename=$DATA/fio.test --rw=read --bs=1M --size=2G --direct=1 --output-format=json > $OUT/fio-read-$r.json
  rm -f $DATA/fio.test; fstrim $(dirname $DATA) 2>/dev/null; sync
  /tmp/ab/$B/ringmq-bench run /work/main/bench-harness/workloads/backlog-drain.toml --spawn-broker \
    --data-dir $DATA --broker-cpus 0 --cpus 1 --quiet --compare-raw --out $OUT/drain-$r.json > $OUT/drain-$r.txt 2>&1
  rd=$(python3 -c "import json;print(round(json.load(open('$OUT/fio-read-$r.json'))['jobs'][0]['read']['bw_bytes']/1e6))")
  wr=$(python3 -c "import json;print(round(json.load(open('$OUT/fio-write-$r.json'))['jobs'][0]['write']['bw_bytes']/1e6))")
  echo "round $r fio write MB/s $wr read MB/s $rd drain MB/s (library, raw): $(grep 'backlog drain MB/s' $OUT/drain-$r.txt | awk '{print $4}' | tr '\n' ' ') counts: $(grep -c 'counts: OK' $OUT/drain-$r.txt)" | tee -a $OUT/summary.txt
done
rm -rf $DATA; fstrim $(dirname $DATA) 2>/dev/null
