//! Feeds arbitrary bytes to the committed-offset decoders (`OffsetCommit::decode` for records
//! replayed from `%SYS%offsets`, `CommittedOffsets::restore` for snapshots). They must never
//! panic, and a record they accept must re-encode to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::group::offsets::{CommittedOffsets, OffsetCommit};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = OffsetCommit::decode(data) {
        assert_eq!(c.encode().unwrap(), data, "decode then encode must give the same bytes");
    }
    let _ = CommittedOffsets::restore(data, 1 << 16);
});
