#!/usr/bin/env python3
"""Round 47: a broker's traced drain reads (reads of 64 KiB or more, in the order they
started) as a fio iolog (version 2) over its commit-log segments, for fio to replay. Each
read as the disk got it: glommio's DmaFile reads the 4 KiB-aligned range around the bytes
asked for. The trace gives each read's file position, not its file: the reads walk the log
forward, so a read more than half a segment below the furthest position read so far is in
the next segment, and one more than half a segment above it is a straggler in the one before.
    python3 iolog.py broker.log seg0 seg1 seg2 > drain.iolog"""
import datetime, re, sys

LINE = re.compile(r'^(\S+)Z TRACE .*file read pos=(\d+) len=(\d+) us=(\d+) ')
log, segs = sys.argv[1], sys.argv[2:]
reads = []
for line in open(log):
    m = LINE.search(line)
    if m and int(m.group(3)) >= 65536:
        end = datetime.datetime.fromisoformat(m.group(1)).timestamp()
        reads.append((end - int(m.group(4)) / 1e6, int(m.group(2)), int(m.group(3))))
reads.sort()

def io(f, pos, ln):
    lo, hi = pos // 4096 * 4096, (pos + ln + 4095) // 4096 * 4096
    return f"{f} read {lo} {hi - lo}"

out = ["fio version 2 iolog"] + [f"{s} add" for s in segs] + [f"{s} open" for s in segs]
seg, top, half = 0, 0, 1 << 29
for _, pos, ln in reads:
    if pos + half < top and seg + 1 < len(segs):
        seg, top = seg + 1, 0
    elif pos > top + half and seg > 0:
        out.append(io(segs[seg - 1], pos, ln))
        continue
    top = max(top, pos)
    out.append(io(segs[seg], pos, ln))
out += [f"{s} close" for s in segs]
print("\n".join(out))
