#!/bin/sh
# Round 46: the loop image's read of 1 MiB blocks, sequential (queue depth 1) and random
# (io_uring at depths 1, 8 and 32), and 8 strided readers, from one 2 GiB file written
# O_DIRECT: what a drain of queues whose batches lie apart in the log may expect.   Usage: OUT=dir sh fio-randread.sh
OUT=${OUT:?}; DATA=${DATA:-/mnt/r22}; mkdir -p "$OUT"
rm -rf "$DATA"/data; fstrim "$DATA"; sync
fio --name=seqwrite --filename=$DATA/fio.test --rw=write --bs=1M --size=2G --direct=1 --output-format=json > $OUT/write.json
fio --name=seqread --filename=$DATA/fio.test --rw=read --bs=1M --size=2G --direct=1 --output-format=json > $OUT/read.json
for qd in 1 8 32; do
  fio --name=randread-qd$qd --filename=$DATA/fio.test --rw=randread --bs=1M --size=2G --direct=1 \
    --ioengine=io_uring --iodepth=$qd --output-format=json > $OUT/randread-qd$qd.json
done
# The drain's pattern: 8 readers, each reading every eighth 1 MiB block (read 1 MiB, skip 7).
for qd in 1 4; do
  fio --name=strided-qd$qd --filename=$DATA/fio.test --size=2G --bs=1M --rw=read:7M --numjobs=8 \
    --offset_increment=1M --ioengine=io_uring --iodepth=$qd --direct=1 --group_reporting \
    --output-format=json > $OUT/strided-qd$qd.json
done
rm -f $DATA/fio.test; fstrim "$DATA"
for f in $OUT/*.json; do
  python3 -c "import json;j=json.load(open('$f'))['jobs'][0];print('$f'.split('/')[-1], round(max(j['read']['bw_bytes'],j['write']['bw_bytes'])/1e6), 'MB/s')"
done
