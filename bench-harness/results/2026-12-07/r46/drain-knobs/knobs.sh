#!/bin/sh
# Round 46: raw backlog-drain (2 GiB, broker spawned on CPU 0, load generator on CPU 1) with
# one workload or broker setting changed at a time, ROUNDS rounds, on the loop image trimmed
# before each run. Run from the repository root; B holds ringmq and ringmq-bench of one build.
#   OUT=dir B=build-dir ROUNDS=n sh knobs.sh "label:k=v ..."    (a label alone: the defaults)
OUT=${OUT:?}; B=${B:?}; ROUNDS=${ROUNDS:-1}; DATA=${DATA:-/mnt/r22}; arms=$1; mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for v in $arms; do
    l=${v%%:*}; e=${v#*:}; [ "$e" = "$v" ] && e=
    rm -rf "$DATA"/data; fstrim "$DATA"; sync
    set -- --set client=raw; [ -n "$e" ] && set -- "$@" --set "$e"
    "$B"/ringmq-bench run bench-harness/workloads/backlog-drain.toml --spawn-broker \
      --data-dir "$DATA"/data --broker-cpus 0 --cpus 1 --quiet "$@" --out "$OUT/$l-$r.json" > "$OUT/$l-$r.txt" 2>&1
    echo "$r $l $(grep 'backlog drain MB/s' "$OUT/$l-$r.txt" | tr -s ' ')"
  done
done
