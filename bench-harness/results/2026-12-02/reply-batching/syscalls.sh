#!/bin/sh
# Syscalls and context switches per thread of the load generator during many-queues: 5 s of
# `perf stat` from the 6th second of a run. Usage: syscalls.sh ARM (a dir under /tmp/ab); OUT=dir.
cd /work/main
arm=$1
/tmp/ab/$arm/ringmq-bench run bench-harness/workloads/many-queues.toml --spawn-broker --broker-cpus 0 --cpus 1 --quiet > $OUT/syscalls-$arm-run.txt 2>&1 &
sleep 6
p=$(pgrep -f "ringmq-bench run" | head -1)
perf stat -e 'syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom,syscalls:sys_enter_futex,context-switches' --per-thread -p $p -- sleep 5 2>&1 | grep -v 'not counted' | grep -v '^$' > $OUT/syscalls-$arm.txt
wait
