"""Drains every queue of a topic with the RocketMQ Python client's pull consumer (from offset
0 of each queue until the broker reports no new message), then stops.

One JSON object per message on stdout, then {"done": count}.
"""
import argparse
import json

from rocketmq.client import PullConsumer


def text(b):
    return b.decode('utf-8', 'replace') if isinstance(b, bytes) else b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--namesrv', required=True)
    ap.add_argument('--topic', required=True)
    ap.add_argument('--group', required=True)
    ap.add_argument('--expression', default='*')
    args = ap.parse_args()
    c = PullConsumer(args.group)
    c.set_namesrv_addr(args.namesrv)
    c.start()
    n = 0
    for msg in c.pull(args.topic, args.expression):
        n += 1
        print(json.dumps({
            'tags': text(msg.tags), 'keys': text(msg.keys), 'body': text(msg.body),
            'idx': text(msg.get_property('idx')), 'queue_id': msg.queue_id,
            'offset': msg.queue_offset,
        }))
    c.shutdown()
    print(json.dumps({'done': n}))


if __name__ == '__main__':
    main()
