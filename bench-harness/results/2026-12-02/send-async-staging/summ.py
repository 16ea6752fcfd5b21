import json, glob, statistics, sys, os
d = sys.argv[1]
def load(p):
    return json.load(open(p))
rows = []
for w in ['small', 'batched', 'batched64k', 'syncflush']:
    for v in ['before', 'after', 'harnessonly']:
        files = sorted(glob.glob(f'{d}/{w}-{v}-*.json')) + (sorted(glob.glob(f'/tmp/perf/{w}-{v}-*.json')) if v == 'harnessonly' else [])
        if not files: continue
        lib = []; raw = []; rat = []; failed = []; p99 = []; msgs = []
        for f in files:
            j = load(f)
            L = j['library']['results']; R = j['raw']['results']
            lib.append(L['produce_bytes_per_s']/1e6); raw.append(R['produce_bytes_per_s']/1e6)
            msgs.append(L['produce_msgs_per_s'])
            rat.append(L['produce_bytes_per_s']/R['produce_bytes_per_s'])
            failed.append(L['failed']); p99.append(L['ack_latency']['p99_us']/1000)
        m = statistics.median
        print(f"{w:11s} {v:11s} n={len(files)} lib MB/s {m(lib):7.1f} ({', '.join('%.0f'%x for x in lib)}) lib msg/s {m(msgs):9.0f} raw MB/s {m(raw):7.1f} ({', '.join('%.0f'%x for x in raw)}) ratio {m(rat):.2f} ({', '.join('%.2f'%x for x in rat)}) failed {failed} ack p99 ms {m(p99):.0f}")
for v in ['before', 'after']:
    files = sorted(glob.glob(f'{d}/latency20k-{v}-*.json'))
    if not files: continue
    vals = {k: [] for k in ['ack50','ack99','ack999','e2e99','pub99','rate']}
    for f in files:
        r = load(f)['results']
        vals['ack50'].append(r['ack_latency']['p50_us']/1000); vals['ack99'].append(r['ack_latency']['p99_us']/1000)
        vals['ack999'].append(r['ack_latency']['p99_9_us']/1000)
        vals['e2e99'].append(r['e2e_latency']['p99_us']/1000); vals['pub99'].append(r['publish_delay']['p99_us']/1000)
        vals['rate'].append(r['produce_msgs_per_s'])
    print(f"latency20k {v:7s} n={len(files)} " + ' '.join(f"{k} {statistics.median(x):.2f} ({', '.join('%.2f'%y for y in x)})" for k,x in vals.items()))
