"""Sums up the group commits a broker traced (timeline.sh): the middle half of each log's
group commits (leaving out the start and the end of the run), one line per log.

    python3 group-commits.py broker-*.log

MB/s: bytes made durable over that time. busy: the share of it the flusher spent waiting for
a group's writes or its fdatasync. ms/MB: those waits per MB made durable."""
import datetime
import re
import statistics as st
import sys

LINE = re.compile(r'^(\S+)Z TRACE .*group commit bytes=(\d+) writes_us=(\d+) sync_us=(\d+) waiters=(\d+)')

for path in sys.argv[1:]:
    rows = []
    for line in open(path):
        m = LINE.search(line)
        if m:
            t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
            rows.append((t,) + tuple(int(m.group(i)) for i in range(2, 6)))
    rows = rows[len(rows) // 4: len(rows) * 3 // 4]
    if len(rows) < 2:
        print(f'{path}: no group commits')
        continue
    span = rows[-1][0] - rows[0][0]
    total = sum(r[1] for r in rows)
    waited = sum(r[2] + r[3] for r in rows) / 1e6
    print(f'{path}: {len(rows)} group commits, {total / span / 1e6:.0f} MB/s, busy {waited / span:.2f}, '
          f'{waited * 1e3 / (total / 1e6):.3f} ms/MB; median {st.median(r[1] for r in rows) / 1e6:.1f} MB, '
          f'writes {st.median(r[2] for r in rows)} us, fdatasync {st.median(r[3] for r in rows)} us, '
          f'{st.median(r[4] for r in rows):.0f} batches; mean {st.mean(r[1] for r in rows) / 1e6:.1f} MB, '
          f'writes {st.mean(r[2] for r in rows):.0f} us, fdatasync {st.mean(r[3] for r in rows):.0f} us')
