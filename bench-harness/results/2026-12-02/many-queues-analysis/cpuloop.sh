# per-cpu busy% every 0.5 s, for $1 samples
prev=$(grep -E '^cpu[01] ' /proc/stat)
for i in $(seq 1 $1); do sleep 0.5; cur=$(grep -E '^cpu[01] ' /proc/stat)
echo "$prev
$cur" | awk -v t=$(date +%s.%N) '{n=$1; idle=$5+$6; io=$6; tot=0; for(i=2;i<=NF;i++) tot+=$i; if(n in t0){printf "%s %.0f%%(io %.0f%%) ", n, 100*(1-(idle-i0[n])/(tot-t0[n])), 100*(io-w0[n])/(tot-t0[n])} else {t0[n]=tot; i0[n]=idle; w0[n]=io}} END {printf "%s\n", substr(t,7,6)}'
prev=$cur; done
