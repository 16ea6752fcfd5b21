#!/bin/bash
# Round 47: round 42 profd.sh with its output folder in O.
# profd.sh BUILD LABEL CLIENT(raw|library) DELAY: profile of the broker and load generator during the drain of an 8 GiB backlog
b=$1; l=$2; c=$3; d=${4:-12}; O=${O:-/tmp/r47/drain}; mkdir -p $O
fstrim /mnt/r22; sync
/tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/backlog-drain.toml --spawn-broker \
    --data-dir /mnt/r22/data --broker-cpus 0 --cpus 1 --quiet --set client=$c --set backlog_bytes=8589934592 --out $O/$l.json > $O/$l.txt 2>&1 & bench=$!
sleep $d
bp=$(pgrep -f 'ringmq broker' | head -1); gp=$(pgrep -f 'ringmq-bench run' | head -1)
grep -E '^cpu[01] ' /proc/stat > $O/$l.s0
perf record -F 999 -g -p $bp -o $O/$l-broker.perf -- sleep 3 > /dev/null 2>&1 &
perf record -F 999 -p $gp -o $O/$l-gen.perf -- sleep 3 > /dev/null 2>&1
grep -E '^cpu[01] ' /proc/stat > $O/$l.s1
wait $bench
busy() { paste $1 $2 | awk -v c=$3 '$1==c {n=NF/2; t=0; for(i=2;i<=n;i++) t+=$(i+n)-$i; idle=($(5+n)-$5)+($(6+n)-$6); printf "%.2f", 1-idle/t}'; }
echo "$l $(grep 'backlog build MB/s\|backlog drain MB/s' $O/$l.txt | awk '{print $4}' | tr '\n' ' ') cpu0 $(busy $O/$l.s0 $O/$l.s1 cpu0) cpu1 $(busy $O/$l.s0 $O/$l.s1 cpu1) $(grep -o '[0-9.]* s measured' $O/$l.txt)"
perf report -i $O/$l-broker.perf --no-children --sort sym --stdio -g none 2>/dev/null | grep -E "^ +[0-9]" | head -40 > $O/$l-broker-flat.txt
perf report -i $O/$l-gen.perf --no-children --sort comm,sym --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -40 > $O/$l-gen-flat.txt
rm -rf /mnt/r22/data
