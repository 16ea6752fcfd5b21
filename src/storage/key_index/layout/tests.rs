//! The key index file's layout: geometry, entries, headers, the walk and the active image.

use super::*;
use proptest::prelude::*;

fn g(slots: u32, entries: u32) -> Geometry {
    Geometry { slot_count: slots, max_entries: entries }
}

fn entry(hash: u32, offset: u64, store_ms: i64) -> Entry {
    Entry { key_hash: hash, topic_id: 1, queue_id: 0, offset, store_ms }
}

fn walk(hash: u32) -> Walk {
    Walk { hash, topic_id: 1, from_ms: i64::MIN, to_ms: i64::MAX }
}

#[test]
fn entry_and_header_round_trip() {
    let raw = RawEntry {
        key_hash: 7,
        topic_id: 9,
        queue_id: 3,
        offset: 1 << 40,
        time_delta_ms: 12,
        previous: 5,
    };
    let mut b = [0u8; ENTRY_BYTES];
    raw.encode(&mut b);
    assert_eq!(RawEntry::decode(&b), Some(raw));
    assert_eq!(RawEntry::decode(&b[..27]), None);
    let h = Header {
        geometry: g(16, 32),
        entry_count: 3,
        begin_store_ms: 1000,
        end_store_ms: 2000,
        min_position: LogPosition::new(4096),
        end_position: LogPosition::new(9000),
    };
    assert_eq!(Header::decode(&h.encode()), Ok(h));
    let mut bad = h.encode();
    bad[20] ^= 1;
    assert!(Header::decode(&bad).unwrap_err().contains("checksum"));
    assert!(Header::decode(&[0u8; 10]).is_err());
    assert!(Header::decode(&[0u8; 64]).unwrap_err().contains("magic"));
}

#[test]
fn file_size_is_block_aligned_and_holds_everything() {
    let geo = g(1000, 1000);
    assert_eq!(geo.file_bytes() % 4096, 0);
    assert!(geo.file_bytes() >= geo.entry_offset(1000));
    assert!(g(0, 1).validate().is_err());
    assert!(g(1 << 25, 1).validate().is_err());
}

#[test]
fn keys_split_on_spaces() {
    let keys: Vec<&[u8]> = split_keys(b" a  bc d ").collect();
    assert_eq!(keys, vec![&b"a"[..], b"bc", b"d"]);
    assert_eq!(split_keys(b"").count(), 0);
    assert_ne!(key_hash(1, b"k"), key_hash(2, b"k"));
}

#[test]
fn a_full_file_or_a_delta_overflow_refuses() {
    let mut img = ActiveImage::new(g(4, 2));
    let p = LogPosition::new(0);
    img.add(entry(1, 0, 10), p, p + 1).unwrap();
    assert_eq!(img.add(entry(1, 1, 10 + (1 << 33)), p, p + 1), Err(AddError::Full));
    img.add(entry(1, 1, 11), p, p + 1).unwrap();
    assert_eq!(img.add(entry(1, 2, 12), p, p + 1), Err(AddError::Full));
}

#[test]
fn extreme_store_times_read_back_from_disk_never_overflow() {
    // A checksum-valid header may hold any begin time; reading its entries back and adding
    // to a loaded image must give an answer, not an arithmetic overflow.
    let raw = RawEntry {
        key_hash: 1,
        topic_id: 1,
        queue_id: 0,
        offset: 0,
        time_delta_ms: u32::MAX,
        previous: 0,
    };
    assert_eq!(raw.entry(i64::MAX).store_ms, i64::MAX);
    let p = LogPosition::new(0);
    let mut img = ActiveImage::load(g(4, 8), Vec::new(), 0, 0, 0, (p, p)).unwrap();
    img.add(entry(1, 0, i64::MIN), p, p + 1).unwrap();
    assert_eq!(img.add(entry(1, 1, i64::MAX), p, p + 1), Err(AddError::Full));
}

#[test]
fn the_walk_stops_at_entries_older_than_the_range() {
    let mut img = ActiveImage::new(g(1, 100));
    let p = LogPosition::new(0);
    for i in 0..10 {
        img.add(entry(5, i, 100 + i as i64 * 10), p, p + 1).unwrap();
    }
    let w = Walk { from_ms: 150, to_ms: 170, ..walk(5) };
    let (found, steps) = img.walk(&w, 100, 1000);
    assert_eq!(found.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![7, 6, 5]);
    // 9, 8 skipped (too new), 7..5 matched, 4 stops the walk.
    assert_eq!(steps, 6);
}

#[test]
fn loading_cuts_entries_past_the_checkpoint_and_repairs_slots() {
    let geo = g(2, 50);
    let mut img = ActiveImage::new(geo);
    let p = LogPosition::new(0);
    for i in 0..20u64 {
        img.add(entry(i as u32 % 4, i, 100 + i as i64), p, p + 1).unwrap();
    }
    img.take_dirty();
    let bytes = img.bytes().to_vec();
    let loaded = ActiveImage::load(geo, bytes, 12, 100, 111, (p, p + 1)).unwrap();
    for h in 0..4 {
        let (found, _) = loaded.walk(&walk(h), 100, 1000);
        let want: Vec<u64> = (0..12u64).rev().filter(|i| *i as u32 % 4 == h).collect();
        assert_eq!(found.iter().map(|e| e.offset).collect::<Vec<_>>(), want);
    }
    // The next entry takes number 12 and links to the repaired chain.
    let mut loaded = loaded;
    loaded.add(entry(0, 99, 200), p, p + 1).unwrap();
    let (found, _) = loaded.walk(&walk(0), 100, 1000);
    assert_eq!(found.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![99, 8, 4, 0]);
}

#[test]
fn a_forward_or_uncounted_link_ends_the_walk() {
    let w = walk(1);
    let raw = |previous| RawEntry {
        key_hash: 1,
        topic_id: 1,
        queue_id: 0,
        offset: 0,
        time_delta_ms: 0,
        previous,
    };
    // Entry 3 linking to entry 3 or later (previous 4+) would loop: the walk ends.
    assert!(matches!(w.step(&raw(4), 3, 10, 0), Step::Match(_, 0)));
    // A link past the counted entries ends it too.
    assert!(matches!(w.step(&raw(3), 5, 2, 0), Step::Match(_, 0)));
    assert!(matches!(w.step(&raw(3), 5, 10, 0), Step::Match(_, 3)));
}

#[test]
fn dirty_runs_cover_changes_once() {
    let geo = g(2000, 1000);
    let mut img = ActiveImage::new(geo);
    let p = LogPosition::new(0);
    img.add(entry(1, 0, 1), p, p + 1).unwrap();
    let runs = img.take_dirty();
    let covered = |at: usize| runs.iter().any(|(a, l)| *a <= at && at < a + l);
    assert!(covered(0) && covered(geo.slot_offset(geo.slot_of(1))));
    assert!(covered(geo.entry_offset(0)));
    // Only the header block is rewritten when nothing else changed.
    assert_eq!(img.take_dirty(), vec![(0, 4096)]);
}

proptest! {
    /// The walk finds exactly the model's matches, newest first, whatever the collisions.
    #[test]
    fn walk_matches_a_model(
        slots in 1u32..8,
        adds in prop::collection::vec((0u32..6, 1u32..3, 0i64..5), 0..200),
        from in 0i64..300, len in 0i64..300, max in 1usize..50,
    ) {
        let geo = g(slots, 256);
        let mut img = ActiveImage::new(geo);
        let mut model = Vec::new();
        let mut t = 0i64;
        let p = LogPosition::new(0);
        for (i, (hash, topic, dt)) in adds.iter().enumerate() {
            t += dt;
            let e = Entry { key_hash: *hash, topic_id: *topic, queue_id: 0, offset: i as u64, store_ms: t };
            img.add(e, p, p + 1).unwrap();
            model.push(e);
        }
        for hash in 0..6u32 {
            let w = Walk { hash, topic_id: 1, from_ms: from, to_ms: from + len };
            let want: Vec<Entry> = model.iter().rev()
                .filter(|e| e.key_hash == hash && e.topic_id == 1 && e.store_ms >= from && e.store_ms <= from + len)
                .take(max).copied().collect();
            let (found, _) = img.walk(&w, max, usize::MAX);
            prop_assert_eq!(found, want);
        }
    }

    /// What a disk hands back after any damage: the decoders never panic, what they
    /// accept re-encodes to itself, and a loaded image's walks stay within its entries.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        count in 0u32..70,
    ) {
        if let Ok(h) = Header::decode(&bytes) {
            prop_assert_eq!(Header::decode(&h.encode()), Ok(h));
        }
        if let Some(e) = RawEntry::decode(&bytes) {
            let mut b = [0u8; ENTRY_BYTES];
            e.encode(&mut b);
            prop_assert_eq!(RawEntry::decode(&b), Some(e));
        }
        let geo = g(7, 64);
        let p = LogPosition::ZERO;
        match ActiveImage::load(geo, bytes, count, 0, 0, (p, p)) {
            Ok(img) => {
                for hash in 0..7 {
                    let (_, steps) = img.walk(&walk(hash), usize::MAX, usize::MAX);
                    prop_assert!(steps <= count as usize);
                }
            }
            Err(_) => prop_assert!(count > 64),
        }
    }

    /// Loading at any count keeps exactly the first `count` entries reachable.
    #[test]
    fn load_keeps_the_counted_prefix(
        adds in prop::collection::vec(0u32..5, 1..100), cut in 0usize..100,
    ) {
        let geo = g(3, 128);
        let mut img = ActiveImage::new(geo);
        let p = LogPosition::new(0);
        for (i, h) in adds.iter().enumerate() {
            img.add(entry(*h, i as u64, 5), p, p + 1).unwrap();
        }
        let count = cut.min(adds.len()) as u32;
        let loaded = ActiveImage::load(geo, img.bytes().to_vec(), count, 5, 5, (p, p + 1)).unwrap();
        for h in 0..5u32 {
            let want: Vec<u64> = (0..count as u64).rev().filter(|i| adds[*i as usize] == h).collect();
            let (found, _) = loaded.walk(&walk(h), usize::MAX, usize::MAX);
            prop_assert_eq!(found.iter().map(|e| e.offset).collect::<Vec<_>>(), want);
        }
    }
}
