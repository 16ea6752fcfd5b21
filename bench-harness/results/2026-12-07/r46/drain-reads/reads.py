"""Sums up the file reads a broker traced (drain-reads.sh), one line per log: the reads'
span (first start to last end), bytes and MB/s over it, the share of that time with no read
in flight (the disk left idle by the broker), the mean number in flight, read sizes and
times (median, p90), and the median in flight at a read's start.

    python3 reads.py broker-*.log"""
import datetime
import re
import statistics as st
import sys

LINE = re.compile(r'^(\S+)Z TRACE .*file read pos=(\d+) len=(\d+) us=(\d+) '
                  r'in_flight_at_start=(\d+) in_flight=(\d+)')

for path in sys.argv[1:]:
    reads = []  # (start, end, len, us, at_start)
    for line in open(path):
        m = LINE.search(line)
        if m:
            end = datetime.datetime.fromisoformat(m.group(1)).timestamp()
            us = int(m.group(4))
            reads.append((end - us / 1e6, end, int(m.group(3)), us, int(m.group(5))))
    # Only the drain's reads: those of at least 64 KiB (index and recovery reads are smaller).
    reads = [r for r in reads if r[2] >= 65536]
    if len(reads) < 2:
        print(f'{path}: no reads')
        continue
    reads.sort()
    first, last = reads[0][0], max(r[1] for r in reads)
    span = last - first
    idle, covered_to = 0.0, first
    for s, e, *_ in reads:
        if s > covered_to:
            idle += s - covered_to
        covered_to = max(covered_to, e)
    total = sum(r[2] for r in reads)
    busy = sum(r[3] for r in reads) / 1e6
    q = lambda xs, p: sorted(xs)[int(len(xs) * p)]
    print(f'{path}: {len(reads)} reads, {total / 1e6:.0f} MB in {span:.2f} s = {total / span / 1e6:.0f} MB/s; '
          f'none in flight {idle / span:.1%} of it; mean in flight {busy / span:.1f}; '
          f'size median {st.median(r[2] for r in reads) / 1e6:.2f} MB; '
          f'time median {st.median(r[3] for r in reads) / 1e3:.1f} ms, p90 {q([r[3] for r in reads], 0.9) / 1e3:.1f} ms; '
          f'in flight at start median {st.median(r[4] for r in reads):.0f}; '
          f'{total / busy / 1e6 if busy else 0:.0f} MB per read-second')
