#!/bin/bash
# Issue 15 item 2: the measured effect of each storage tuning knob and of the three profiles.
# Builds release once, then runs every knob value of the list below once per round, the values
# of one knob next to each other (A B C, then A B C in the next round), with `uptime` recorded
# per run in runs.tsv. Broker (1 shard) on CPU 0, load generator on CPU 1.
#
#   bench-harness/results/2026-12-02/tuning/sweep.sh OUT_DIR [ROUNDS] [FIRST_ROUND]
#   python3 bench-harness/results/2026-12-02/tuning/summarize.py OUT_DIR > OUT_DIR/summary.md
#
# The "buffered+os" values set the latency profile's dirty-page sysctls (tuning/latency.os.toml)
# for that one run and restore the machine's values right after it (needs root; without it the
# run is skipped and runs.tsv says so). No other OS setting is changed.
set -u
out=${1:?usage: sweep.sh OUT_DIR [ROUNDS] [FIRST_ROUND]}
rounds=${2:-3}
# More rounds into the same OUT_DIR later: sweep.sh OUT_DIR 2 4 runs rounds 4 and 5.
first=${3:-1}
root=$(git rev-parse --show-toplevel)
cd "$root" || exit 2
mkdir -p "$out"
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release --workspace --bins || exit 2
bench=target/release/ringmq-bench
w=bench-harness/workloads
rev=$(git rev-parse --short HEAD)
git diff --quiet HEAD || rev="$rev-dirty"

# Short runs: 2 s warm-up, 5 s measured; the backlog is 1 GiB (16x the workload's 64 MiB cache).
short="--set warmup_s=2 --set duration_s=5"
lat="--set target_rate=20000"
drain="--set backlog_bytes=1073741824"

# The profiles' broker configs as --set flags, read from tuning/<profile>.toml (data_dir is the
# harness's).
profile_sets() {
  python3 - "$1" <<'EOF'
import sys, tomllib
t = tomllib.load(open(f"tuning/{sys.argv[1]}.toml", "rb"))
out = []
for table, keys in t.items():
    for k, v in keys.items():
        if table == "broker" and k == "data_dir":
            continue
        v = str(v).lower() if isinstance(v, bool) else (f'"{v}"' if isinstance(v, str) else v)
        out += ["--set", f"{table}.{k}={v}"]
print(" ".join(out))
EOF
}
p_thr=$(profile_sets throughput)
p_lat=$(profile_sets latency)
p_dur=$(profile_sets durability)

# knob|label|workload|extra flags
runs=(
  "flush_mode|async|batched|--set storage.flush_mode=async"
  "flush_mode|sync|batched|--set storage.flush_mode=sync"
  "flush_mode|async|latency20k|$lat --set storage.flush_mode=async"
  "flush_mode|sync|latency20k|$lat --set storage.flush_mode=sync"
  "flush_interval|100ms-4MiB|batched|--set storage.flush_interval_ms=100 --set storage.flush_bytes=4194304"
  "flush_interval|500ms-16MiB|batched|--set storage.flush_interval_ms=500 --set storage.flush_bytes=16777216"
  "flush_interval|1000ms-64MiB|batched|--set storage.flush_interval_ms=1000 --set storage.flush_bytes=67108864"
  "flush_interval|100ms-4MiB|latency20k|$lat --set storage.flush_interval_ms=100 --set storage.flush_bytes=4194304"
  "flush_interval|500ms-16MiB|latency20k|$lat --set storage.flush_interval_ms=500 --set storage.flush_bytes=16777216"
  "flush_interval|1000ms-64MiB|latency20k|$lat --set storage.flush_interval_ms=1000 --set storage.flush_bytes=67108864"
  "chunk|1MiBx32|batched|--set storage.chunk_size_bytes=1048576 --set storage.chunk_pool_chunks=32"
  "chunk|256KiBx64|batched|--set storage.chunk_size_bytes=262144 --set storage.chunk_pool_chunks=64"
  "chunk|1MiBx10|batched|--set storage.chunk_size_bytes=1048576 --set storage.chunk_pool_chunks=10"
  "chunk|2MiBx64|batched|--set storage.chunk_size_bytes=2097152 --set storage.chunk_pool_chunks=64"
  "io_mode|direct|batched|--set storage.io_mode=direct"
  "io_mode|buffered|batched|--set storage.io_mode=buffered"
  "io_mode|buffered+os|batched|--set storage.io_mode=buffered"
  "io_mode|direct|sync-flush|--set storage.io_mode=direct"
  "io_mode|buffered|sync-flush|--set storage.io_mode=buffered"
  "io_mode|direct|latency20k|$lat --set storage.io_mode=direct"
  "io_mode|buffered|latency20k|$lat --set storage.io_mode=buffered"
  "io_mode|direct|backlog-drain|$drain --set storage.io_mode=direct"
  "io_mode|buffered|backlog-drain|$drain --set storage.io_mode=buffered"
  "io_mode|buffered+os|backlog-drain|$drain --set storage.io_mode=buffered"
  "segment|1GiB|batched|--set storage.segment_size_bytes=1073741824"
  "segment|256MiB|batched|--set storage.segment_size_bytes=268435456"
  "segment|64MiB|batched|--set storage.segment_size_bytes=67108864"
  "cache|64MiB|backlog-drain|$drain --set storage.cache_bytes=67108864"
  "cache|256MiB|backlog-drain|$drain --set storage.cache_bytes=268435456"
  "cache|2GiB|backlog-drain|$drain --set storage.cache_bytes=2147483648"
  "cache|256MiB|latency20k|$lat --set storage.cache_bytes=268435456"
  "cache|16MiB|latency20k|$lat --set storage.cache_bytes=16777216"
  "read_ahead|1MiB|backlog-drain|$drain --set storage.read_ahead_bytes=1048576"
  "read_ahead|256KiB|backlog-drain|$drain --set storage.read_ahead_bytes=262144"
  "read_ahead|4MiB|backlog-drain|$drain --set storage.read_ahead_bytes=4194304"
  "profile|default|batched|"
  "profile|throughput|batched|$p_thr"
  "profile|latency|batched|$p_lat"
  "profile|durability|batched|$p_dur"
  "profile|default|latency20k|$lat"
  "profile|throughput|latency20k|$lat $p_thr"
  "profile|latency|latency20k|$lat $p_lat"
  "profile|durability|latency20k|$lat $p_dur"
  "key_index|enabled|batched-keyed|--set key_distribution=random --set key_count=100000 --set key_index.enabled=true"
  "key_index|disabled|batched-keyed|--set key_distribution=random --set key_count=100000 --set key_index.enabled=false"
)

dirty_keys="dirty_background_ratio dirty_ratio dirty_expire_centisecs dirty_writeback_centisecs"
declare -A saved
for k in $dirty_keys; do saved[$k]=$(cat /proc/sys/vm/$k); done
restore_dirty() { for k in $dirty_keys; do echo "${saved[$k]}" > /proc/sys/vm/$k; done; }
trap restore_dirty EXIT
apply_latency_dirty() {
  python3 - <<'EOF' || return 1
import tomllib
os_ = tomllib.load(open("tuning/latency.os.toml", "rb"))["os"]
for k in ("dirty_background_ratio", "dirty_ratio", "dirty_expire_centisecs",
          "dirty_writeback_centisecs"):
    with open(f"/proc/sys/vm/{k}", "w") as f:
        f.write(str(os_[k]))
EOF
}

[ -f "$out/runs.tsv" ] || printf 'round\tknob\tlabel\tworkload\trevision\tstart_utc\tload1\tload5\texit\tfile\tos\n' > "$out/runs.tsv"
for round in $(seq "$first" $((first + rounds - 1))); do
  for r in "${runs[@]}"; do
    IFS='|' read -r knob label wl extra <<< "$r"
    case $wl in
      latency20k) file=$w/latency.toml ;;
      batched-keyed) file=$w/batched.toml ;;
      *) file=$w/$wl.toml ;;
    esac
    [ "$wl" = backlog-drain ] && dur="" || dur=$short
    name="r$round-$knob-$label-$wl"
    os="-"
    if [ "$label" = buffered+os ]; then
      if apply_latency_dirty; then
        os=$(for k in $dirty_keys; do printf '%s=%s,' "$k" "$(cat /proc/sys/vm/$k)"; done)
      else
        printf '%s\t%s\t%s\t%s\t%s\t%s\t-\t-\tskipped\t-\tcannot write /proc/sys/vm\n' \
          "$round" "$knob" "$label" "$wl" "$rev" "$(date -u +%FT%TZ)" >> "$out/runs.tsv"
        continue
      fi
    fi
    read -r l1 l5 _ < /proc/loadavg
    start=$(date -u +%FT%TZ)
    # shellcheck disable=SC2086
    "$bench" run "$file" --spawn-broker --broker-cpus 0 --cpus 1 --quiet $dur $extra \
      --out "$out/$name.json" > "$out/$name.txt" 2>&1
    rc=$?
    [ "$os" != "-" ] && restore_dirty
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$knob" "$label" "$wl" "$rev" \
      "$start" "$l1" "$l5" "$rc" "$name.json" "$os" >> "$out/runs.tsv"
    echo "$start round $round $knob $label $wl exit $rc load $l1"
  done
done
