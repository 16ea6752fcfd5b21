"""Sends messages with the RocketMQ Python client (rocketmq==0.4.4, the C++ client inside).

One JSON object per message on stdout: index, send status, message id, queue offset.
Message i has keys "<prefix>-<i>", tag tags[i % len(tags)], body "<prefix>-<i>" and the
property idx=i (and DELAY with --delay-level). Modes: sync, oneway, orderly (queue chosen by i % 2), batch (one batch).
"""
import argparse
import json
import sys
import time

from rocketmq.client import Message, Producer
from rocketmq.exceptions import ProducerException


PAD = 0


def message(topic, prefix, tags, i):
    m = Message(topic)
    m.set_keys('%s-%d' % (prefix, i))
    m.set_tags(tags[i % len(tags)])
    m.set_property('idx', str(i))
    m.set_body('%s-%d' % (prefix, i) + 'x' * PAD)
    return m


def first_send(send):
    """Runs the producer's first send, again if the C++ client lost its own race.

    Right after start, the client's heartbeat thread may be connecting to the broker when the
    first send asks for the same connection: the send's try-lock on the connection table fails
    within a millisecond ("GetTransport ... get timed_mutex timeout" in its log), the one
    broker is then excluded and the send fails with "No route info" without a byte reaching
    the broker. Only that failure of the first send is retried; every later send must succeed.
    """
    for attempt in range(5):
        try:
            return send()
        except ProducerException as e:
            if 'No route info' not in str(e) or attempt == 4:
                raise
            print('first send failed before reaching the broker (%s); again' % e, file=sys.stderr)
            time.sleep(0.3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--namesrv', required=True)
    ap.add_argument('--topic', required=True)
    ap.add_argument('--group', default='PID_RINGMQ_TEST')
    ap.add_argument('--mode', choices=['sync', 'oneway', 'orderly', 'batch'], default='sync')
    ap.add_argument('--count', type=int, default=1)
    ap.add_argument('--prefix', default='m')
    ap.add_argument('--tags', default='A')
    ap.add_argument('--delay-level', type=int, default=0)
    ap.add_argument('--pad', type=int, default=0,
                    help='append this many x to each body (over 4 KiB the client compresses)')
    args = ap.parse_args()
    tags = args.tags.split(',')
    global PAD
    PAD = args.pad
    p = Producer(args.group, timeout=10000)
    p.set_namesrv_addr(args.namesrv)
    p.start()
    try:
        if args.mode == 'batch':
            msgs = [message(args.topic, args.prefix, tags, i) for i in range(args.count)]
            r = first_send(lambda: p.send_batch(msgs))
            print(json.dumps({'i': -1, 'status': int(r.status), 'msg_id': r.msg_id,
                              'offset': r.offset}))
        for i in range(args.count if args.mode != 'batch' else 0):
            m = message(args.topic, args.prefix, tags, i)
            if args.delay_level:
                m.set_delay_time_level(args.delay_level)
            sent_ms = int(time.time() * 1000)
            if args.mode == 'sync':
                r = first_send(lambda: p.send_sync(m)) if i == 0 else p.send_sync(m)
                print(json.dumps({'i': i, 'status': int(r.status), 'msg_id': r.msg_id,
                                  'offset': r.offset, 'sent_ms': sent_ms}))
            elif args.mode == 'oneway':
                p.send_oneway(m)
                print(json.dumps({'i': i}))
            else:
                r = (first_send(lambda: p.send_orderly(m, i % 2)) if i == 0
                     else p.send_orderly(m, i % 2))
                print(json.dumps({'i': i, 'status': int(r.status), 'msg_id': r.msg_id,
                                  'offset': r.offset}))
            sys.stdout.flush()
        if args.mode == 'oneway':
            # A oneway send returns once the C++ client has queued the frame for its I/O
            # thread, and nothing answers it; shutting down at once can drop frames that
            # thread has not written yet (seen once in CI: all three oneway messages missing
            # while the script succeeded, on a loaded machine). Give it time to write them.
            time.sleep(1)
    finally:
        p.shutdown()


if __name__ == '__main__':
    main()
