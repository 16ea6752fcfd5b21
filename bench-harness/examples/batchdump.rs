//! Prints the stored batches of one queue between two offsets: base offset, record count,
//! producer id and epoch, base sequence, the first message's producer and number (the
//! harness's body prefix), store time. With `ordercheck`, for a run kept on disk.
//! Usage: `batchdump <broker host:port> <topic> <queue> <from offset> <to offset>`.
use ringmq::client::Client;
use ringmq::format::BatchView;
use ringmq::protocol::{Request, Response};
use std::time::Duration;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (addr, topic, q) = (&a[1], a[2].clone(), a[3].parse::<u32>().unwrap());
    let (from, to) = (a[4].parse::<u64>().unwrap(), a[5].parse::<u64>().unwrap());
    let client = Client::connect(addr).unwrap();
    let router = client.router().clone();
    let mut off = from;
    while off < to {
        let req = Request::Fetch {
            topic: topic.clone(),
            queue_id: q,
            offset: off,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            tags: Vec::new(),
        };
        let r = router.queue_connection(&topic, q).and_then(|c| c.send(&req)).unwrap();
        let Ok(Response::Fetch { batches, .. }) =
            r.wait_timeout(Duration::from_secs(5)).ok().unwrap()
        else {
            panic!()
        };
        let mut rest: &[u8] = &batches;
        let mut next = off;
        while rest.len() >= ringmq::format::batch::HEADER_LEN {
            let v = BatchView::parse(rest, rest.len()).unwrap();
            let h = &v.header;
            let first = v.records().next().unwrap().unwrap();
            let b = first.body;
            let p = u32::from_le_bytes(b[8..12].try_into().unwrap());
            let seq = u64::from_le_bytes(b[16..24].try_into().unwrap());
            if h.next_offset() > off && h.stamp.base_offset < to {
                println!(
                    "base {} n {} pid {:#x} epoch {} bseq {} | p{} seq {} store {}",
                    h.stamp.base_offset,
                    h.record_count,
                    h.producer_id >> 16,
                    h.producer_id & 0xffff,
                    h.base_sequence,
                    p,
                    seq,
                    h.stamp.store_timestamp_ms
                );
            }
            next = next.max(h.next_offset());
            rest = &rest[h.length as usize..];
        }
        if next == off {
            break;
        }
        off = next;
    }
}
