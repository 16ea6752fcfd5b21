//! Reads every queue of a topic as stored, in offset order, and checks that each (producer,
//! key)'s messages (the harness's 32-byte body prefix) are in send order, and in one queue: a
//! run kept with `--keep-data --keep-topics`, served by a broker started on its data directory.
//! Usage: `ordercheck <broker host:port> <topic> <queue count>`.
use std::collections::HashMap;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, topic, queues) = (&args[1], &args[2], args[3].parse::<u32>().unwrap());
    let client = ringmq::client::Client::connect(addr).unwrap();
    let consumer = client.consumer();
    let mut next: HashMap<(u32, u32), (u64, u32, u64)> = HashMap::new();
    let mut shown = 0;
    let mut queues_of: HashMap<(u32, u32), u32> = HashMap::new();
    let (mut total, mut bad) = (0u64, 0u64);
    for q in 0..queues {
        let mut off = 0u64;
        loop {
            let v = consumer.pull_view(topic, q, off, Duration::ZERO).unwrap();
            let mut n = 0;
            for m in v.messages() {
                n += 1;
                total += 1;
                let b = m.body();
                let producer = u32::from_le_bytes(b[8..12].try_into().unwrap());
                let key = u32::from_le_bytes(b[12..16].try_into().unwrap());
                let seq = u64::from_le_bytes(b[16..24].try_into().unwrap());
                let ks = u64::from_le_bytes(b[24..32].try_into().unwrap());
                *queues_of.entry((producer, key)).or_insert(0) |= 1 << q;
                let e = next.entry((producer, key)).or_insert((0, q, 0));
                if ks != e.0 {
                    bad += 1;
                    if shown < 30 {
                        shown += 1;
                        println!(
                            "q{q} off {} p{producer} k{key} seq {seq} key_seq {ks} expected {} (last at q{} off {})",
                            m.offset, e.0, e.1, e.2
                        );
                    }
                }
                *e = (ks.max(e.0) + if ks >= e.0 { 1 } else { 0 }, q, m.offset);
            }
            if n == 0 && v.next_offset >= v.max_offset {
                break;
            }
            off = v.next_offset;
        }
        println!("queue {q}: end {off}");
    }
    println!("total {total} out of order {bad}");
    let multi = queues_of.values().filter(|m| m.count_ones() > 1).count();
    println!("(producer, key)s {} in several queues {multi}", queues_of.len());
    for (k, m) in queues_of.iter().filter(|(_, m)| m.count_ones() > 1).take(5) {
        println!("  {k:?} queues {m:016b}");
    }
}
