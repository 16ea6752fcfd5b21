#!/bin/bash
# dstat.sh BUILD LABEL [k=v...]: a one-queue drain of 8 GiB (with the overrides k=v) by the build in /tmp/ab/BUILD, /proc/diskstats sampled every 100 ms into $O/LABEL.stats (default O=/tmp/q1/ds)
b=$1; l=$2; shift 2; O=${O:-/tmp/q1/ds}; mkdir -p $O
# Round 48.
ex=""; for e in "$@"; do ex="$ex --set $e"; done
rm -rf /mnt/r22/data; fstrim /mnt/r22; sync; sleep 5
(while true; do echo "$(date +%s.%N) $(grep -E ' (loop0|vda) ' /proc/diskstats | tr '\n' ' ')"; sleep 0.1; done) > $O/$l.stats & sp=$!
/tmp/ab/$b/ringmq-bench run /work/main/bench-harness/workloads/backlog-drain.toml --spawn-broker \
    --data-dir /mnt/r22/data --broker-cpus 0 --cpus 1 --quiet --set backlog_bytes=8589934592 $ex --out $O/$l.json > $O/$l.txt 2>&1
kill $sp
python3 - $O/$l.stats <<'PY'
import sys
rows=[]
for line in open(sys.argv[1]):
    f=line.split()
    t=float(f[0])
    # first device block: fields after name
    i=f.index('loop0'); v=[int(x) for x in f[i+1:i+12]]
    rows.append((t,v))
iv=[(a,b) for a,b in zip(rows,rows[1:]) if b[1][0]>a[1][0] and b[1][4]==a[1][4]]
dt=sum(b[0]-a[0] for a,b in iv); d=[sum(b[1][k]-a[1][k] for a,b in iv) for k in range(11)]
busy=d[9]/1000/dt
print("drain secs %.1f MB/s %.0f req KiB %.0f ms/read %.2f depth %.2f busy %.2f" % (dt, d[2]*512/dt/1e6, d[2]*512/d[0]/1024, d[3]/d[0], d[3]/1000/dt, busy))
PY
echo "$l $(awk '$1=="backlog" && $3=="MB/s" {print $4}' $O/$l.txt | tr '\n' ' ')"
