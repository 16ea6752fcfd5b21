"""Consumes with the RocketMQ Python client's push consumer (clustering; --orderly for the
orderly consumer) until --expect deliveries arrived (then --settle more seconds, to catch extras) or --timeout.

One JSON object per message on stdout, then {"done": count}.
"""
import argparse
import json
import threading
import time

from rocketmq.client import PushConsumer


def text(b):
    return b.decode('utf-8', 'replace') if isinstance(b, bytes) else b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--namesrv', required=True)
    ap.add_argument('--topic', required=True)
    ap.add_argument('--group', required=True)
    ap.add_argument('--expression', default='*')
    ap.add_argument('--expect', type=int, required=True)
    ap.add_argument('--timeout', type=float, default=60)
    ap.add_argument('--settle', type=float, default=2)
    ap.add_argument('--fail', choices=['none', 'first', 'always'], default='none',
                    help='raise (RECONSUME_LATER) on a first delivery, or on every one')
    ap.add_argument('--orderly', action='store_true')
    args = ap.parse_args()
    got = []
    lock = threading.Lock()

    def on_message(msg):
        with lock:
            got.append({
                'topic': text(msg.topic), 'tags': text(msg.tags), 'keys': text(msg.keys),
                'body': text(msg.body), 'idx': text(msg.get_property('idx')),
                'id': text(msg.id), 'queue_id': msg.queue_id, 'offset': msg.queue_offset,
                'reconsume_times': msg.reconsume_times,
                'at_ms': int(time.time() * 1000),
            })
        if args.fail == 'always' or (args.fail == 'first' and msg.reconsume_times == 0):
            raise RuntimeError('failing on purpose: the broker should redeliver')

    c = PushConsumer(args.group, orderly=args.orderly)
    c.set_namesrv_addr(args.namesrv)
    c.set_thread_count(1)
    c.subscribe(args.topic, on_message, args.expression)
    c.start()
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        with lock:
            if len(got) >= args.expect:
                break
        time.sleep(0.1)
    time.sleep(args.settle)
    c.shutdown()
    with lock:
        for g in got:
            print(json.dumps(g))
        print(json.dumps({'done': len(got)}))


if __name__ == '__main__':
    main()
