//! The store's checkpoint codec and open-time checks.

use super::*;
use proptest::prelude::*;

fn checkpoint() -> KeyCheckpoint {
    KeyCheckpoint {
        indexed_to: LogPosition::new(1 << 33),
        active_seq: 7,
        active: Header {
            geometry: Geometry { slot_count: 16, max_entries: 64 },
            entry_count: 9,
            begin_store_ms: 1000,
            end_store_ms: 2000,
            min_position: LogPosition::new(4096),
            end_position: LogPosition::new(8192),
        },
    }
}

#[test]
fn checkpoint_round_trips_and_damage_is_refused() {
    let c = checkpoint();
    let b = c.encode();
    assert_eq!(KeyCheckpoint::decode(&b), Ok(c));
    for at in [0, 10, 40, b.len() - 1] {
        let mut bad = b.clone();
        bad[at] ^= 0x10;
        assert!(KeyCheckpoint::decode(&bad).is_err(), "flip at {at}");
    }
    assert!(KeyCheckpoint::decode(&b[..b.len() - 1]).is_err());
    assert_eq!(parse_key_file_name(&key_file_name(42)), Some(42));
    assert_eq!(parse_key_file_name("keys-42.kidx"), None);
    assert_eq!(parse_key_file_name("keys-0000000000000000004x.kidx"), None);
}

#[test]
fn a_checkpoint_naming_the_last_file_number_is_refused_not_a_panic_at_the_next_seal() {
    use crate::runtime::{run_on_new_executor, ExecutorOptions};
    use crate::storage::sim_dir::SimDir;
    // Checksum-valid, but no file can follow the active one: the first seal would
    // overflow its number.
    run_on_new_executor(ExecutorOptions::default(), || async {
        let dir = SimDir::new(1);
        let geometry = Geometry { slot_count: 4, max_entries: 1 };
        let ckpt = KeyCheckpoint {
            indexed_to: LogPosition::ZERO,
            active_seq: u64::MAX,
            active: Header::empty(geometry),
        };
        dir.write_atomic(KEY_CHECKPOINT_FILE, &ckpt.encode()).await.unwrap();
        let settings = KeyIndexSettings { geometry, max_files: 4 };
        let index = KeyIndex::open(dir, settings, LogPosition::MAX).await.unwrap();
        let e = Entry { key_hash: 1, topic_id: 1, queue_id: 0, offset: 0, store_ms: 1 };
        let (p, q) = (LogPosition::new(0), LogPosition::new(100));
        index.add_batch(p, q, &[e]).await.unwrap();
        // The second entry does not fit: the active file is sealed.
        let e = Entry { offset: 1, ..e };
        index.add_batch(q, LogPosition::new(200), &[e]).await.unwrap();
        assert_eq!(index.file_count(), 2);
    })
    .unwrap();
}

#[test]
fn a_checkpoint_past_the_end_of_the_log_is_not_trusted() {
    use crate::runtime::{run_on_new_executor, ExecutorOptions};
    use crate::storage::sim_dir::SimDir;
    run_on_new_executor(ExecutorOptions::default(), || async {
        let dir = SimDir::new(1);
        let settings =
            KeyIndexSettings { geometry: Geometry { slot_count: 4, max_entries: 8 }, max_files: 4 };
        let index = KeyIndex::open(dir.clone(), settings, LogPosition::MAX).await.unwrap();
        let e = Entry { key_hash: 1, topic_id: 1, queue_id: 0, offset: 0, store_ms: 1 };
        index.add_batch(LogPosition::ZERO, LogPosition::new(100), &[e]).await.unwrap();
        index.checkpoint().await.unwrap();
        drop(index);
        // The log ends at 100: the checkpoint is kept.
        let index = KeyIndex::open(dir.clone(), settings, LogPosition::new(100)).await.unwrap();
        assert_eq!(index.indexed_to(), LogPosition::new(100));
        drop(index);
        // The log was cut to 40: rebuilt from the log, nothing of the cut range found.
        let index = KeyIndex::open(dir, settings, LogPosition::new(40)).await.unwrap();
        assert_eq!(index.indexed_to(), LogPosition::ZERO);
        let walk = Walk { hash: 1, topic_id: 1, from_ms: i64::MIN, to_ms: i64::MAX };
        assert!(index.query(&walk, 10).await.unwrap().entries.is_empty());
    })
    .unwrap();
}

proptest! {
    /// A checkpoint file read back after any damage: never a panic; what is accepted
    /// re-encodes to itself (with a correct CRC appended, the structural checks run).
    #[test]
    fn arbitrary_checkpoints_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..100), fix_crc: bool,
    ) {
        let mut bytes = body;
        if fix_crc {
            let crc = crc32c::crc32c(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
        }
        if let Ok(c) = KeyCheckpoint::decode(&bytes) {
            prop_assert_eq!(KeyCheckpoint::decode(&c.encode()), Ok(c));
        }
    }
}
