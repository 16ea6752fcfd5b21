#!/bin/bash
# Follow-up to sweep.sh: is read_ahead_bytes = 4 MiB slower than 1 MiB only when more queues
# are read at once than a log has read-ahead buffers (4)? backlog-drain (1 GiB) with 2 and 8
# queues, read-ahead 1 MiB and 4 MiB, interleaved per round. Uses the release binaries as built
# (run sweep.sh first, which builds them). Broker on CPU 0, load on CPU 1.
#   readahead-queues.sh OUT_DIR [ROUNDS] [FIRST_ROUND]
set -u
out=${1:?usage: readahead-queues.sh OUT_DIR [ROUNDS]}
rounds=${2:-3}
first=${3:-1}
cd "$(git rev-parse --show-toplevel)" || exit 2
mkdir -p "$out"
bench=target/release/ringmq-bench
[ -f "$out/runs.tsv" ] || printf 'round\tknob\tlabel\tworkload\trevision\tstart_utc\tload1\tload5\texit\tfile\tos\n' > "$out/runs.tsv"
for round in $(seq "$first" $((first + rounds - 1))); do
  for q in 2 8; do
    for ra in 1048576 4194304; do
      label="$((ra >> 20))MiB"
      name="r$round-read_ahead_q$q-$label-backlog-drain"
      read -r l1 l5 _ < /proc/loadavg
      start=$(date -u +%FT%TZ)
      "$bench" run bench-harness/workloads/backlog-drain.toml --spawn-broker --broker-cpus 0 \
        --cpus 1 --quiet --set backlog_bytes=1073741824 --set queues_per_topic=$q \
        --set storage.read_ahead_bytes=$ra --out "$out/$name.json" > "$out/$name.txt" 2>&1
      rc=$?
      printf '%s\tread_ahead_q%s\t%s\tbacklog-drain\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$round" "$q" \
        "$label" "$(git rev-parse --short HEAD)" "$start" "$l1" "$l5" "$rc" "$name.json" >> "$out/runs.tsv"
      echo "$start round $round q=$q ra=$label exit $rc load $l1"
    done
  done
done
