"""Throughput of the RocketMQ Python client (rocketmq==0.4.4) against a ringmq broker's
RocketMQ front: --threads threads each send_sync messages of --size bytes for --seconds.
Prints one JSON object: messages, seconds, msgs_per_s, ack latency p50/p99/max in ms.
"""
import argparse
import json
import threading
import time

from rocketmq.client import Message, Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--namesrv', required=True)
    ap.add_argument('--topic', default='BenchPy')
    ap.add_argument('--threads', type=int, default=4)
    ap.add_argument('--size', type=int, default=100)
    ap.add_argument('--seconds', type=float, default=10)
    args = ap.parse_args()
    p = Producer('PID_BENCH', timeout=10000)
    p.set_namesrv_addr(args.namesrv)
    p.start()
    body = 'x' * args.size
    warm = Message(args.topic)
    warm.set_body(body)
    p.send_sync(warm)  # route lookup and connection before the clock starts
    lat = [[] for _ in range(args.threads)]
    stop = time.time() + args.seconds

    def run(i):
        mine = lat[i]
        while time.time() < stop:
            m = Message(args.topic)
            m.set_body(body)
            t = time.perf_counter()
            p.send_sync(m)
            mine.append(time.perf_counter() - t)

    start = time.time()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - start
    p.shutdown()
    all_lat = sorted(x for l in lat for x in l)
    n = len(all_lat)
    pct = lambda q: round(all_lat[min(n - 1, int(q * n))] * 1000, 3)
    print(json.dumps({'client': 'python rocketmq==0.4.4 send_sync', 'threads': args.threads,
                      'size': args.size, 'messages': n, 'seconds': round(took, 2),
                      'msgs_per_s': round(n / took), 'ack_ms_p50': pct(0.5),
                      'ack_ms_p99': pct(0.99), 'ack_ms_max': pct(1.0)}))


if __name__ == '__main__':
    main()
