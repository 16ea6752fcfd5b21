'use strict';
// Sends --count messages with the ali-ons Node client (its own JavaScript codec, SEND_MESSAGE_V2),
// then consumes them with its push consumer. Prints one JSON line per send and per delivery,
// then {"done": n}. Usage: node ons.js NAMESRV TOPIC GROUP COUNT
const { Producer, Consumer, Message } = require('ali-ons');

const [nameSrv, topic, group, countText] = process.argv.slice(2);
const count = Number(countText);
const common = {
  nameSrv,
  httpclient: {},
  accessKeyId: 'test',
  accessKeySecret: 'test',
  persistConsumerOffsetInterval: 1000,
  rebalanceInterval: 1000,
};

async function main() {
  const producer = new Producer(Object.assign({ producerGroup: 'PID_ONS' }, common));
  await producer.ready();
  for (let i = 0; i < count; i++) {
    const msg = new Message(topic, i % 2 === 0 ? 'A' : 'B', Buffer.from(`js-${i}`));
    msg.keys = [ `js-${i}` ];
    msg.properties.idx = String(i);
    const r = await producer.send(msg);
    console.log(JSON.stringify({ i, status: r.sendStatus, msg_id: r.msgId, queue: r.messageQueue.queueId, offset: r.queueOffset }));
  }
  await producer.close();

  const consumer = new Consumer(Object.assign({ consumerGroup: group }, common));
  const seen = [];
  consumer.subscribe(topic, '*', async msg => {
    seen.push({
      body: msg.body.toString(), tags: msg.tags, keys: msg.keys, idx: msg.properties.idx,
      queue_id: msg.queueId, offset: Number(msg.queueOffset),
    });
  });
  consumer.on('error', err => console.error('consumer error', err));
  await consumer.ready();
  const deadline = Date.now() + 60000;
  while (seen.length < count && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 100));
  }
  await new Promise(r => setTimeout(r, 1500));
  await consumer.close();
  for (const s of seen) console.log(JSON.stringify(s));
  console.log(JSON.stringify({ done: seen.length }));
  process.exit(0);
}

main().catch(err => { console.error(err); process.exit(1); });
setTimeout(() => { console.error('timeout'); process.exit(2); }, 110000).unref();
