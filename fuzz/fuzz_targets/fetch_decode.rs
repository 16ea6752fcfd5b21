//! Feeds arbitrary bytes to what the client library decodes from a fetch answer
//! (`client::consumer`: `scan_batches`, `scan_queue_batches`, `decode_batches` and
//! `decode_batches_shared`), and to the transaction records a shard replays from its log
//! (`transaction::record`, `decode_half`).
//! Any panic is a bug; add the crashing input as a regression test next to the decoder. The
//! proptests `any_fetched_bytes_decode_without_a_panic` (consumer.rs) and
//! `decoders_never_panic` (transaction/record.rs) run similar drivers in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::client::consumer::{
    decode_batches, decode_batches_shared, scan_batches, scan_queue_batches, StampedQueue,
};
use ringmq::transaction::record::{HalfRecord, OpRecord};
use ringmq::transaction::replay::decode_half;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 | 1 => {
            // The first 8 bytes choose the requested offset; mode 1 asks for tag "A".
            let (from, bytes) = match rest.split_first_chunk::<8>() {
                Some((f, b)) => (u64::from_le_bytes(*f), b),
                None => (0, rest),
            };
            let tags = if mode % 3 == 1 { vec![b"A".to_vec()] } else { Vec::new() };
            let scan = scan_batches(bytes, from, &tags);
            assert!(scan.valid_len <= bytes.len() && scan.next_offset >= from);
            let d = decode_batches(bytes, from, &tags);
            assert_eq!(d.next_offset, scan.next_offset);
            // Sharing the buffer instead of copying gives the same messages.
            assert_eq!(decode_batches_shared(&bytes.to_vec().into(), from, &tags), d);
            let mut last = None;
            for m in &d.messages {
                assert!(m.offset >= from && m.offset < d.next_offset);
                assert!(last.map_or(true, |l| l < m.offset), "offsets out of order");
                last = Some(m.offset);
            }
            let queue = StampedQueue { topic_id: Some(1), queue_id: 0 };
            assert!(scan_queue_batches(bytes, from, &tags, queue).valid_len <= scan.valid_len);
        }
        _ => {
            if let Ok(h) = HalfRecord::decode(rest) {
                assert_eq!(HalfRecord::decode(&h.encode().unwrap()), Ok(h));
            }
            if let Ok(o) = OpRecord::decode(rest) {
                assert_eq!(OpRecord::decode(&o.encode()), Ok(o));
            }
            let _ = decode_half(1, 0, rest);
        }
    }
});
