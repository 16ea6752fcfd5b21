"""RocketMQ front vs native, one session, interleaved: the Python client (rocketmq==0.4.4)
through the front, a raw-frame Rust RocketMQ client through the front, and the native client,
each sending 100-byte messages one at a time from 4 threads (each waiting for its ack).

Per run it records the client's JSON line, the load average before the run, the broker
process's CPU time (utime+stime from /proc), its threads' context switches (voluntary and
not, /proc/<pid>/task/*/status) and the client process's CPU time (rusage of children), so
the cost per message splits into client and broker.

Run from the repository root after
  cargo build --release --bin ringmq --example native_sync_sends --example rocketmq_raw_sync_sends
  python3 bench-harness/results/2026-12-02/rocketmq-front/run_front_bench.py [rounds] [seconds]
Writes runs.json and summary.json next to this script.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SECONDS = sys.argv[2] if len(sys.argv) > 2 else '10'
THREADS, SIZE = '4', '100'
NATIVE, FRONT, NAMESRV = 21811, 21911, 21876
TICK = os.sysconf('SC_CLK_TCK')


def cpu_s(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def ctx_switches(pid):
    n = 0
    for task in os.listdir(f'/proc/{pid}/task'):
        try:
            for line in open(f'/proc/{pid}/task/{task}/status'):
                if 'ctxt_switches' in line:
                    n += int(line.split()[1])
        except FileNotFoundError:
            pass
    return n


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    tmp = tempfile.mkdtemp(prefix='ringmq-front-bench-')
    cfg = os.path.join(tmp, 'broker.toml')
    with open(cfg, 'w') as f:
        f.write(f'[broker]\nport = {NATIVE}\nshards = 2\npin = false\n'
                f'data_dir = "{tmp}/data"\n'
                f'[rocketmq]\nenabled = true\nbroker_port = {FRONT}\nnamesrv_port = {NAMESRV}\n'
                '[metrics]\nlisten = "127.0.0.1:0"\n')
    broker = subprocess.Popen(['target/release/ringmq', 'broker', '--config', cfg],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while True:
        line = broker.stdout.readline()
        if not line:
            sys.exit('broker exited before it was ready')
        if 'ready' in line:
            break
    commands = {
        'python_front': ['target/rocketmq-venv/bin/python', 'bench-harness/rocketmq/python_produce.py',
                         '--namesrv', f'127.0.0.1:{NAMESRV}', '--threads', THREADS, '--size', SIZE,
                         '--seconds', SECONDS],
        'raw_front': ['target/release/examples/rocketmq_raw_sync_sends', f'127.0.0.1:{FRONT}',
                      'BenchRaw', THREADS, SIZE, SECONDS],
        'native': ['target/release/examples/native_sync_sends', f'127.0.0.1:{NATIVE}',
                   'BenchNative', THREADS, SIZE, SECONDS],
    }
    runs = []
    try:
        for r in range(ROUNDS):
            for name, cmd in commands.items():
                load = open('/proc/loadavg').read().split()[:3]
                x0 = ctx_switches(broker.pid)
                b0, c0, t0 = cpu_s(broker.pid), children_cpu_s(), time.time()
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                b1, c1 = cpu_s(broker.pid), children_cpu_s()
                x1 = ctx_switches(broker.pid)
                if out.returncode != 0:
                    sys.exit(f'{name} failed: {out.stderr[-2000:]}')
                result = json.loads(out.stdout.strip().splitlines()[-1])
                n = result['messages']
                run = {'round': r + 1, 'name': name, 'loadavg_before': load,
                       'wall_s': round(time.time() - t0, 2), 'result': result,
                       'broker_cpu_s': round(b1 - b0, 2), 'client_cpu_s': round(c1 - c0, 2),
                       'broker_cpu_us_per_msg': round((b1 - b0) * 1e6 / n, 1),
                       'client_cpu_us_per_msg': round((c1 - c0) * 1e6 / n, 1),
                       'broker_ctx_switches_per_msg': round((x1 - x0) / n, 2)}
                print(json.dumps(run), flush=True)
                runs.append(run)
    finally:
        broker.terminate()
        broker.wait(timeout=30)
    summary = {'rounds': ROUNDS, 'seconds': float(SECONDS), 'threads': int(THREADS),
               'size': int(SIZE), 'revision': subprocess.run(
                   ['git', 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()}
    for name in commands:
        mine = [x for x in runs if x['name'] == name]
        med = lambda f: statistics.median(f(x) for x in mine)
        summary[name] = {
            'msgs_per_s_median': med(lambda x: x['result']['msgs_per_s']),
            'msgs_per_s_all': [x['result']['msgs_per_s'] for x in mine],
            'ack_ms_p50_median': med(lambda x: x['result']['ack_ms_p50']),
            'ack_ms_p99_median': med(lambda x: x['result']['ack_ms_p99']),
            'broker_cpu_us_per_msg_median': med(lambda x: x['broker_cpu_us_per_msg']),
            'client_cpu_us_per_msg_median': med(lambda x: x['client_cpu_us_per_msg']),
            'broker_ctx_switches_per_msg_median': med(lambda x: x['broker_ctx_switches_per_msg']),
        }
    n = summary['native']['msgs_per_s_median']
    summary['ratio_python_front_to_native'] = round(summary['python_front']['msgs_per_s_median'] / n, 3)
    summary['ratio_raw_front_to_native'] = round(summary['raw_front']['msgs_per_s_median'] / n, 3)
    for fname, data in (('runs.json', runs), ('summary.json', summary)):
        with open(os.path.join(HERE, fname), 'w') as f:
            json.dump(data, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
