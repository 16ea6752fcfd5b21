#!/bin/bash
# cpud.sh BUILD LABEL CLIENT(raw|library) DELAY: busy share of CPU 0 (broker) and CPU 1 (load generator) from /proc/stat over 3 s of the drain of an 8 GiB backlog (round 42 profd.sh without perf; iowait counts as idle)
b=$1; l=$2; c=$3; d=${4:-12}; O=${O:-/tmp/r46/drain}
fstrim /mnt/r22; sync
/tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/backlog-drain.toml --spawn-broker \
    --data-dir /mnt/r22/data --broker-cpus 0 --cpus 1 --quiet --set client=$c --set backlog_bytes=8589934592 --out $O/$l.json > $O/$l.txt 2>&1 & bench=$!
sleep $d
bp=$(pgrep -f 'ringmq broker' | head -1); gp=$(pgrep -f 'ringmq-bench run' | head -1)
grep -E '^cpu[01] ' /proc/stat > $O/$l.s0
sleep 3
grep -E '^cpu[01] ' /proc/stat > $O/$l.s1
wait $bench
busy() { paste $1 $2 | awk -v c=$3 '$1==c {n=NF/2; t=0; for(i=2;i<=n;i++) t+=$(i+n)-$i; idle=($(5+n)-$5)+($(6+n)-$6); printf "%.2f", 1-idle/t}'; }
echo "$l $(grep 'backlog build MB/s\|backlog drain MB/s' $O/$l.txt | awk '{print $4}' | tr '\n' ' ') cpu0 $(busy $O/$l.s0 $O/$l.s1 cpu0) cpu1 $(busy $O/$l.s0 $O/$l.s1 cpu1) $(grep -o '[0-9.]* s measured' $O/$l.txt)"
rm -rf /mnt/r22/data
