//! Producer ids for idempotent produce: unique across the broker's shards and restarts.
//!
//! Layout (see [`crate::protocol::producer_id`]): `boot | producer | epoch`. `boot` is the
//! broker's start count, kept in `<data_dir>/producer_ids.boot` and advanced durably by the
//! main thread at every start ([`advance_boot`]) before any shard serves, so no id of an
//! earlier run is handed out again, whatever the clock does (a wall-clock epoch would repeat
//! after a clock step back, and a persisted per-id counter would cost an fsync per producer).
//! Each shard then numbers its producers `shard, shard + shards, shard + 2 × shards, ...`
//! ([`ProducerIdAllocator`], on the shard's thread), so shards never collide without talking.
//!
//! A missing file starts at boot 1 (a new data directory); a corrupt one stops the start with
//! a message, rather than risk reusing ids whose sequence windows the logs still hold.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::protocol::producer_id::{compose, BOOT_BITS, PRODUCER_BITS};

pub const BOOT_FILE: &str = "producer_ids.boot";
/// `u64 boot` (little-endian) then the CRC32C of those 8 bytes.
const BOOT_FILE_LEN: usize = 12;

/// Serializes the reads and writes of the boot file: the main thread at start, and shard
/// threads while they follow a master or are promoted (rare: once per boot of the master).
static BOOT_FILE_LOCK: Mutex<()> = Mutex::new(());

/// Reads the last start count, writes the next one durably (temp file, fsync, rename,
/// directory fsync) and returns it. Main thread, before the shards start; a promoted shard
/// also takes a fresh one (a boot no id of this data directory, nor any id its log holds
/// from another master, was made with: see [`note_boot_seen`]).
pub fn advance_boot(data_dir: &Path) -> Result<u64, String> {
    let _guard = BOOT_FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let next = read_boot(data_dir)? + 1;
    if next >= 1 << BOOT_BITS {
        return Err(format!(
            "{}: the broker was started {} times; no producer ids are left",
            data_dir.join(BOOT_FILE).display(),
            next - 1
        ));
    }
    write_boot(data_dir, next)?;
    Ok(next)
}

/// A replica stores batches with producer ids its master made, whose boot counts are the
/// master's, not this broker's: raise this data directory's count to at least `boot`, durably,
/// so that once this broker is a master (promoted, or restarted with `role = "master"`) it
/// never hands out an id a producer of the old master still holds. Called before the replica
/// acknowledges the batch that carried `boot`.
pub fn note_boot_seen(data_dir: &Path, boot: u64) -> Result<(), String> {
    let _guard = BOOT_FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if read_boot(data_dir)? < boot {
        write_boot(data_dir, boot)?;
    }
    Ok(())
}

/// The boot count stored in the file, 0 when there is none.
fn read_boot(data_dir: &Path) -> Result<u64, String> {
    let path = data_dir.join(BOOT_FILE);
    let last = match std::fs::read(&path) {
        Ok(bytes) => decode_boot(&bytes).ok_or_else(|| {
            format!(
                "{} is corrupt; it numbers producer ids, so a broker cannot \
                                   start without it: restore it or remove the whole data directory",
                path.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok(last)
}

/// Writes `next` durably (temp file, fsync, rename, directory fsync).
fn write_boot(data_dir: &Path, next: u64) -> Result<(), String> {
    let path = data_dir.join(BOOT_FILE);
    let tmp = data_dir.join(format!("{BOOT_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&encode_boot(next))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn encode_boot(boot: u64) -> [u8; BOOT_FILE_LEN] {
    let mut out = [0u8; BOOT_FILE_LEN];
    out[..8].copy_from_slice(&boot.to_le_bytes());
    let crc = crate::format::crc::crc32c(&out[..8]);
    out[8..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_boot(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != BOOT_FILE_LEN {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[8..].try_into().ok()?);
    let boot = (crc == crate::format::crc::crc32c(&bytes[..8]))
        .then(|| u64::from_le_bytes(bytes[..8].try_into().unwrap()))?;
    // No count this file can hold is past the boots an id has room for: advance_boot stops
    // before it and a seen boot comes from an id. A larger one is not ours (and adding 1 to
    // it could overflow).
    (boot < 1 << BOOT_BITS).then_some(boot)
}

/// Hands out one shard's producer ids (epoch 0). Pure: the boot count comes from the caller.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    boot: u64,
    shard: u64,
    shard_count: u64,
    next: u64,
}

impl ProducerIdAllocator {
    pub fn new(boot: u64, shard: usize, shard_count: usize) -> Self {
        ProducerIdAllocator {
            boot,
            shard: shard as u64,
            shard_count: shard_count.max(1) as u64,
            next: 0,
        }
    }

    /// The next id, or `None` once this run's 2^24 producer numbers are used up.
    pub fn allocate(&mut self) -> Option<i64> {
        let number = self.next.checked_mul(self.shard_count)?.checked_add(self.shard)?;
        if number >= 1 << PRODUCER_BITS {
            return None;
        }
        let id = compose(self.boot, number)?;
        self.next += 1;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn boots_advance_durably_and_corruption_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(advance_boot(dir.path()).unwrap(), 1);
        assert_eq!(advance_boot(dir.path()).unwrap(), 2);
        assert_eq!(advance_boot(dir.path()).unwrap(), 3);
        let path = dir.path().join(BOOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = advance_boot(dir.path()).unwrap_err();
        assert!(e.contains("corrupt"), "{e}");
    }

    #[test]
    fn a_checksum_valid_boot_count_past_the_id_range_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BOOT_FILE), encode_boot(u64::MAX)).unwrap();
        let e = advance_boot(dir.path()).unwrap_err();
        assert!(e.contains("corrupt"), "{e}");
    }

    #[test]
    fn a_boot_seen_from_a_master_is_passed_by_the_next_boot() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(advance_boot(dir.path()).unwrap(), 1);
        // The master's ids carry boot 7: recorded durably; the next boot is above it.
        note_boot_seen(dir.path(), 7).unwrap();
        note_boot_seen(dir.path(), 3).unwrap(); // lower: no change
        assert_eq!(advance_boot(dir.path()).unwrap(), 8);
        // Seen boots never lower the count.
        note_boot_seen(dir.path(), 2).unwrap();
        assert_eq!(advance_boot(dir.path()).unwrap(), 9);
        // A new data directory that first follows a master.
        let fresh = tempfile::tempdir().unwrap();
        note_boot_seen(fresh.path(), 4).unwrap();
        assert_eq!(advance_boot(fresh.path()).unwrap(), 5);
    }

    #[test]
    fn ids_are_unique_across_shards_and_boots() {
        let mut seen = HashSet::new();
        for boot in 1..3 {
            for shard in 0..3 {
                let mut a = ProducerIdAllocator::new(boot, shard, 3);
                for _ in 0..100 {
                    let id = a.allocate().unwrap();
                    assert!(id >= 0 && crate::protocol::producer_id::epoch(id) == 0);
                    assert!(seen.insert(id), "id {id} handed out twice");
                }
            }
        }
        let mut a = ProducerIdAllocator::new(1, 0, 1);
        a.next = (1 << PRODUCER_BITS) - 1;
        assert!(a.allocate().is_some());
        assert_eq!(a.allocate(), None, "bounded, never wraps into another boot");
    }
}
