#!/bin/sh
# The cost of a wake-up on this machine: two threads passing a token through a pipe
# (perf bench sched pipe, 20,000 round trips), on two CPUs and on one; and a bare syscall.
# usage: sh wake.sh > wake.txt
for i in 1 2 3; do
  echo "two CPUs: $(perf bench sched pipe -l 20000 2>&1 | grep usecs/op)"
  echo "one CPU:  $(taskset -c 1 perf bench sched pipe -l 20000 2>&1 | grep usecs/op)"
done
echo "syscall:  $(perf bench syscall basic 2>&1 | grep usecs/op)"
