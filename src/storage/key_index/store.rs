//! The key index files of one shard: the active file (in memory, written at checkpoints),
//! the sealed files (on disk, read on query), the checkpoint, and retention.
//!
//! # Files (in `<shard dir>/keys/`)
//! - `keys-<seq>.kidx`: index files in [`super::layout`]'s format, numbered in log order.
//!   Every file but the newest is sealed: written whole and fdatasynced, its header final.
//! - `keys.checkpoint`: the log position below which every batch is indexed, which file is
//!   active, and how many of its entries (and their times and positions) are durable.
//!
//! # Durability
//! A checkpoint writes the active file's changed blocks, fdatasyncs it, then replaces
//! `keys.checkpoint` atomically. Files and entries past the checkpoint are untrusted at open:
//! later files are deleted, the active file keeps only its counted entries (its slots and links
//! are rebuilt from them), and the caller re-indexes the log from the checkpoint position. A
//! failed fdatasync is never retried: the index stops (queries answer an error) and the next
//! start rebuilds from the last checkpoint.
//!
//! # Bounds
//! Memory: one file image (`file_bytes` of [`Geometry`]) plus one small header per sealed
//! file; at most `max_files` files on disk, the oldest deleted first, and every file whose
//! batches retention removed from the log. A query reads at most [`MAX_QUERY_STEPS`] entries.
//!
//! Runs on its shard's executor; `!Send`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::layout::ENTRY_BYTES;
use super::layout::{ActiveImage, AddError, Entry, Geometry, Header, RawEntry, Walk, HEADER_BYTES};
use crate::runtime::{self, Semaphore};
use crate::storage::file::{LogDir, LogFile};
use crate::storage::types::LogPosition;

pub const KEY_FILE_SUFFIX: &str = ".kidx";
pub const KEY_CHECKPOINT_FILE: &str = "keys.checkpoint";
/// Entries a query reads at most, over all files (a hot hash cannot make a query unbounded).
pub const MAX_QUERY_STEPS: usize = 100_000;
const CHECKPOINT_MAGIC: &[u8; 8] = b"RMQKCKP1";
const CHECKPOINT_BYTES: usize = 8 + 8 + 8 + 4 + 4 + 4 + 8 + 8 + 8 + 8 + 4;

pub fn key_file_name(seq: u64) -> String {
    format!("keys-{seq:020}{KEY_FILE_SUFFIX}")
}

pub fn parse_key_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("keys-")?.strip_suffix(KEY_FILE_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The durable state a checkpoint records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCheckpoint {
    /// Every batch before this log position is indexed in the files up to the active one.
    pub indexed_to: LogPosition,
    pub active_seq: u64,
    /// The active file's header as of the checkpoint (its entry count is what is durable).
    pub active: Header,
}

impl KeyCheckpoint {
    pub fn encode(&self) -> Vec<u8> {
        let h = &self.active;
        let mut b = Vec::with_capacity(CHECKPOINT_BYTES);
        b.extend_from_slice(CHECKPOINT_MAGIC);
        b.extend_from_slice(&self.indexed_to.get().to_le_bytes());
        b.extend_from_slice(&self.active_seq.to_le_bytes());
        b.extend_from_slice(&h.geometry.slot_count.to_le_bytes());
        b.extend_from_slice(&h.geometry.max_entries.to_le_bytes());
        b.extend_from_slice(&h.entry_count.to_le_bytes());
        b.extend_from_slice(&h.begin_store_ms.to_le_bytes());
        b.extend_from_slice(&h.end_store_ms.to_le_bytes());
        b.extend_from_slice(&h.min_position.get().to_le_bytes());
        b.extend_from_slice(&h.end_position.get().to_le_bytes());
        let crc = crate::format::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<KeyCheckpoint, String> {
        if b.len() != CHECKPOINT_BYTES {
            return Err(format!("key checkpoint is {} bytes, not {CHECKPOINT_BYTES}", b.len()));
        }
        if &b[..8] != CHECKPOINT_MAGIC {
            return Err("not a key index checkpoint (bad magic)".into());
        }
        let body = CHECKPOINT_BYTES - 4;
        let crc = u32::from_le_bytes(b[body..].try_into().expect("4 bytes"));
        if crc != crate::format::crc::crc32c(&b[..body]) {
            return Err("key index checkpoint checksum mismatch".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let geometry = Geometry { slot_count: u32_at(24), max_entries: u32_at(28) };
        geometry.validate()?;
        let entry_count = u32_at(32);
        if entry_count > geometry.max_entries {
            return Err(format!("key checkpoint counts {entry_count} entries, more than a file"));
        }
        let active_seq = u64_at(16);
        if active_seq == u64::MAX {
            // Sealing the active file numbers the next one after it: there would be none.
            return Err(format!("key checkpoint names file {active_seq}, the last number"));
        }
        Ok(KeyCheckpoint {
            indexed_to: LogPosition::new(u64_at(8)),
            active_seq,
            active: Header {
                geometry,
                entry_count,
                begin_store_ms: u64_at(36) as i64,
                end_store_ms: u64_at(44) as i64,
                min_position: LogPosition::new(u64_at(52)),
                end_position: LogPosition::new(u64_at(60)),
            },
        })
    }
}

/// Settings of one shard's key index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyIndexSettings {
    pub geometry: Geometry,
    /// Index files kept at most (sealed and active); the oldest go first.
    pub max_files: u32,
}

struct Sealed<F> {
    header: Header,
    file: Rc<F>,
}

struct State<F> {
    active: ActiveImage,
    active_seq: u64,
    active_file: Option<Rc<F>>,
    sealed: BTreeMap<u64, Sealed<F>>,
    indexed_to: LogPosition,
    checkpointed_to: LogPosition,
    failed: Option<String>,
}

/// What a query found: entries newest first, and whether the step bound cut it short.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    pub entries: Vec<Entry>,
    pub truncated: bool,
}

/// One shard's key index. See the module documentation.
pub struct KeyIndex<D: LogDir> {
    dir: D,
    settings: KeyIndexSettings,
    st: RefCell<State<D::File>>,
    /// One writer (add, checkpoint, retention) at a time; queries never wait for it.
    gate: Semaphore,
}

/// The first `len` bytes of `file` (fewer where it is shorter) in one `Vec`, read a MiB at a
/// time: the whole file is never held twice.
async fn read_whole<F: LogFile>(file: &F, len: usize) -> io::Result<Vec<u8>> {
    const STEP: usize = 1 << 20;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let want = STEP.min(len - out.len());
        let got = file.read_at(out.len() as u64, want).await?;
        out.extend_from_slice(&got);
        if got.len() < want {
            break;
        }
    }
    Ok(out)
}

fn io_err(what: impl std::fmt::Display, e: io::Error) -> String {
    format!("{what}: {e}")
}

impl<D: LogDir> KeyIndex<D> {
    /// Opens the index in `dir`, keeping what the last checkpoint made durable and deleting
    /// what it does not cover. The caller then indexes the log from [`Self::indexed_to`].
    /// A checkpoint past `log_end`, the end of the log it indexes (a replica's log truncated
    /// to its master's, a log restored from an older copy), is not trusted: its entries past
    /// the end name messages the log does not hold, and the log's new bytes below its
    /// position would never be indexed. The index is rebuilt from the log, as for a damaged
    /// checkpoint.
    pub async fn open(
        dir: D,
        settings: KeyIndexSettings,
        log_end: LogPosition,
    ) -> Result<KeyIndex<D>, String> {
        settings.geometry.validate()?;
        let names = dir.list().await.map_err(|e| io_err("listing the key index", e))?;
        for n in names.iter().filter(|n| n.ends_with(".tmp")) {
            let _ = dir.remove(n).await;
        }
        let checkpoint = match dir.read_all(KEY_CHECKPOINT_FILE).await {
            Ok(Some(b)) => match KeyCheckpoint::decode(&b) {
                Ok(c) if c.indexed_to > log_end => {
                    tracing::warn!(
                        "{}: covers the log to {} but the log ends at {log_end}; rebuilding \
                         the key index",
                        KEY_CHECKPOINT_FILE,
                        c.indexed_to
                    );
                    None
                }
                Ok(c) => Some(c),
                Err(e) => {
                    // Only the index is lost: it is rebuilt from the log.
                    tracing::warn!("{}: {e}; rebuilding the key index", KEY_CHECKPOINT_FILE);
                    None
                }
            },
            Ok(None) => None,
            Err(e) => return Err(io_err("reading the key index checkpoint", e)),
        };
        let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_key_file_name(n)).collect();
        seqs.sort_unstable();
        let active_seq = checkpoint.map_or(0, |c| c.active_seq);
        let mut sealed = BTreeMap::new();
        let mut active = None;
        let configured_bytes = settings.geometry.file_bytes();
        let mut active_dropped = false;
        for seq in seqs {
            let name = key_file_name(seq);
            if checkpoint.is_none() || seq > active_seq {
                dir.remove(&name).await.map_err(|e| io_err(format!("removing {name}"), e))?;
                continue;
            }
            let c = checkpoint.expect("checked above");
            if seq == active_seq && c.active.geometry.file_bytes() > configured_bytes {
                // A file of a larger geometry than this run's (any `Geometry::validate`
                // allows, up to about 1.9 GB) would be loaded whole into memory, beyond the
                // budget of one configured file: its range of the log is indexed again.
                let g = c.active.geometry;
                tracing::warn!(
                    "{name}: made with {} slots and {} entries, larger than the configured {} \
                     and {}; re-indexing the log from position {}",
                    g.slot_count,
                    g.max_entries,
                    settings.geometry.slot_count,
                    settings.geometry.max_entries,
                    c.active.min_position
                );
                dir.remove(&name).await.map_err(|e| io_err(format!("removing {name}"), e))?;
                active_dropped = true;
                continue;
            }
            let file = dir.open(&name, false).await.map_err(|e| io_err(&name, e))?;
            if seq == active_seq {
                let h = c.active;
                let bytes = read_whole(&file, h.geometry.file_bytes())
                    .await
                    .map_err(|e| io_err(&name, e))?;
                let image = ActiveImage::load(
                    h.geometry,
                    bytes,
                    h.entry_count,
                    h.begin_store_ms,
                    h.end_store_ms,
                    (h.min_position, h.end_position),
                )?;
                active = Some((image, Rc::new(file)));
                continue;
            }
            let head = file.read_at(0, HEADER_BYTES).await.map_err(|e| io_err(&name, e))?;
            match Header::decode(&head) {
                Ok(header) => {
                    sealed.insert(seq, Sealed { header, file: Rc::new(file) });
                }
                Err(e) => {
                    tracing::warn!("{name}: {e}; its keys can no longer be found");
                    drop(file);
                    let _ = dir.remove(&name).await;
                }
            }
        }
        let mut indexed_to = checkpoint.map_or(LogPosition::ZERO, |c| c.indexed_to);
        if let (None, Some(c)) = (&active, checkpoint) {
            if c.active.entry_count > 0 {
                // The checkpoint counts entries of a file that is gone (deleted by hand, or
                // dropped above): index its range of the log again.
                if !active_dropped {
                    tracing::warn!(
                        "{} is missing; re-indexing the log from position {}",
                        key_file_name(c.active_seq),
                        c.active.min_position
                    );
                }
                indexed_to = c.active.min_position;
            }
        }
        let (image, file) = match active {
            Some((image, file)) => (image, Some(file)),
            None => (ActiveImage::new(settings.geometry), None),
        };
        if let Err(e) = dir.sync_dir().await {
            return Err(io_err("syncing the key index directory", e));
        }
        let index = KeyIndex {
            dir,
            settings,
            st: RefCell::new(State {
                active: image,
                active_seq,
                active_file: file,
                sealed,
                indexed_to,
                checkpointed_to: indexed_to,
                failed: None,
            }),
            gate: Semaphore::new(1),
        };
        if index.st.borrow().active.header.geometry != settings.geometry {
            // The geometry changed: the old active file is sealed as it is.
            let _gate = index.gate.acquire_permit(1).await.map_err(|_| "closed".to_string())?;
            index.seal().await?;
        }
        Ok(index)
    }

    /// The log position below which every batch is indexed (in memory; durable once a
    /// checkpoint covers it).
    pub fn indexed_to(&self) -> LogPosition {
        self.st.borrow().indexed_to
    }

    /// The position the last checkpoint made durable.
    pub fn checkpointed_to(&self) -> LogPosition {
        self.st.borrow().checkpointed_to
    }

    /// Files on disk or in memory (sealed + active).
    pub fn file_count(&self) -> usize {
        self.st.borrow().sealed.len() + 1
    }

    /// Why the index stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.st.borrow().failed.clone()
    }

    fn check(&self) -> Result<(), String> {
        match &self.st.borrow().failed {
            Some(f) => Err(format!("the key index stopped after an I/O failure: {f}")),
            None => Ok(()),
        }
    }

    fn fail(&self, reason: String) -> String {
        tracing::error!(dir = %self.dir.path().display(), "key index stopped: {reason}");
        self.st.borrow_mut().failed.get_or_insert(reason.clone());
        reason
    }

    /// Indexes one batch at `position` (ending at `end`): `entries` are its keyed messages.
    /// Batches must come in log order. Seals the active file when it is full.
    pub async fn add_batch(
        &self,
        position: LogPosition,
        end: LogPosition,
        entries: &[Entry],
    ) -> Result<(), String> {
        let _gate = self.gate.acquire_permit(1).await.map_err(|_| "closed".to_string())?;
        self.check()?;
        // A batch's entries go into one file when they fit one: a seal then covers whole
        // batches, so the checkpoint it writes claims exactly what the sealed file holds.
        let room = {
            let h = &self.st.borrow().active.header;
            h.geometry.max_entries - h.entry_count
        };
        if entries.len() > room as usize
            && entries.len() <= self.settings.geometry.max_entries as usize
        {
            self.seal().await?;
        }
        for e in entries {
            let added = self.st.borrow_mut().active.add(*e, position, end);
            if let Err(AddError::Full) = added {
                self.seal().await?;
                let mut st = self.st.borrow_mut();
                st.active
                    .add(*e, position, end)
                    .map_err(|_| "a key index entry does not fit an empty file".to_string())?;
            }
        }
        let mut st = self.st.borrow_mut();
        st.active.advance(end);
        st.indexed_to = st.indexed_to.max(end);
        Ok(())
    }

    /// Notes that the log before `to` holds nothing more to index (segment ends, a range
    /// retention removed).
    pub fn skip_to(&self, to: LogPosition) {
        let mut st = self.st.borrow_mut();
        st.indexed_to = st.indexed_to.max(to);
    }

    /// Writes the active file's changed blocks and fdatasyncs it. Gate held.
    async fn write_active(&self) -> Result<Rc<D::File>, String> {
        let (runs, seq, existing) = {
            let mut st = self.st.borrow_mut();
            (st.active.take_dirty(), st.active_seq, st.active_file.clone())
        };
        let name = key_file_name(seq);
        let file = match existing {
            Some(f) => f,
            None => {
                let f = self.dir.open(&name, true).await.map_err(|e| io_err(&name, e))?;
                let f = Rc::new(f);
                self.dir.sync_dir().await.map_err(|e| self.fail(io_err("syncing keys/", e)))?;
                self.st.borrow_mut().active_file = Some(f.clone());
                f
            }
        };
        for (at, len) in runs {
            let mut buf = runtime::alloc_dma(len);
            buf.as_bytes_mut()[..len]
                .copy_from_slice(&self.st.borrow().active.bytes()[at..at + len]);
            if let Err(e) = file.write_at(Rc::new(buf), at as u64).await {
                // Nothing durable was claimed, but the written blocks are unknown now: stop
                // the index like the log; the next start rebuilds from the last checkpoint.
                return Err(self.fail(io_err(format!("writing {name}"), e)));
            }
        }
        if let Err(e) = file.sync_data().await {
            return Err(self.fail(io_err(format!("syncing {name}"), e)));
        }
        Ok(file)
    }

    /// Makes everything indexed so far durable and records it in `keys.checkpoint`.
    pub async fn checkpoint(&self) -> Result<(), String> {
        let _gate = self.gate.acquire_permit(1).await.map_err(|_| "closed".to_string())?;
        self.check()?;
        self.checkpoint_locked().await
    }

    async fn checkpoint_locked(&self) -> Result<(), String> {
        let (ckpt_before_write, indexed_to) = {
            let st = self.st.borrow();
            let c = KeyCheckpoint {
                indexed_to: st.indexed_to,
                active_seq: st.active_seq,
                active: st.active.header,
            };
            (c, st.indexed_to)
        };
        self.write_active().await?;
        let stored = self.dir.write_atomic(KEY_CHECKPOINT_FILE, &ckpt_before_write.encode()).await;
        if let Err(e) = stored {
            return Err(self.fail(io_err("writing the key index checkpoint", e)));
        }
        self.st.borrow_mut().checkpointed_to = indexed_to;
        Ok(())
    }

    /// Seals the active file (written whole, synced) and starts the next one in memory, then
    /// checkpoints so the next open knows the new active file. Gate held.
    async fn seal(&self) -> Result<(), String> {
        if self.st.borrow().active.is_empty() && self.st.borrow().active_file.is_none() {
            let mut st = self.st.borrow_mut();
            st.active = ActiveImage::new(self.settings.geometry);
            return Ok(());
        }
        let file = self.write_active().await?;
        {
            let mut st = self.st.borrow_mut();
            let header = st.active.header;
            let seq = st.active_seq;
            st.sealed.insert(seq, Sealed { header, file });
            st.active = ActiveImage::new(self.settings.geometry);
            st.active_seq = seq + 1;
            st.active_file = None;
        }
        // The sealed file's entries are durable; a checkpoint now names the new active file,
        // with nothing in it, at the position the sealed file covers.
        let ckpt = {
            let st = self.st.borrow();
            let last = st.sealed.values().next_back().expect("just sealed").header;
            KeyCheckpoint {
                indexed_to: last.end_position.max(st.checkpointed_to),
                active_seq: st.active_seq,
                active: st.active.header,
            }
        };
        // Only what the sealed file covers is claimed, not the batches in flight.
        let claimed = ckpt.indexed_to.min(self.st.borrow().indexed_to);
        let ckpt = KeyCheckpoint { indexed_to: claimed, ..ckpt };
        let stored = self.dir.write_atomic(KEY_CHECKPOINT_FILE, &ckpt.encode()).await;
        if let Err(e) = stored {
            return Err(self.fail(io_err("writing the key index checkpoint", e)));
        }
        self.st.borrow_mut().checkpointed_to = claimed;
        self.trim_to_max_files().await
    }

    async fn trim_to_max_files(&self) -> Result<(), String> {
        loop {
            let victim = {
                let st = self.st.borrow();
                if st.sealed.len() < self.settings.max_files.max(1) as usize {
                    return Ok(());
                }
                *st.sealed.keys().next().expect("not empty")
            };
            self.remove_sealed(victim).await?;
        }
    }

    async fn remove_sealed(&self, seq: u64) -> Result<(), String> {
        self.st.borrow_mut().sealed.remove(&seq);
        let name = key_file_name(seq);
        match self.dir.remove(&name).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Left on disk; the next open deletes nothing it trusts, so say so and go on.
            Err(e) => tracing::warn!("cannot delete {name}: {e}"),
        }
        Ok(())
    }

    /// Deletes the sealed files whose batches all lie before `oldest` (the first position
    /// the log still holds): retention removed them from the log.
    pub async fn retain(&self, oldest: LogPosition) -> Result<usize, String> {
        let _gate = self.gate.acquire_permit(1).await.map_err(|_| "closed".to_string())?;
        let victims: Vec<u64> = self
            .st
            .borrow()
            .sealed
            .iter()
            .take_while(|(_, s)| s.header.end_position <= oldest)
            .map(|(seq, _)| *seq)
            .collect();
        for &seq in &victims {
            self.remove_sealed(seq).await?;
        }
        if !victims.is_empty() {
            let _ = self.dir.sync_dir().await;
        }
        Ok(victims.len())
    }

    /// The entries matching `walk`, newest first, at most `max`.
    pub async fn query(&self, walk: &Walk, max: usize) -> Result<Found, String> {
        self.check()?;
        let mut found = Found::default();
        let mut steps_left = MAX_QUERY_STEPS;
        let (mut entries, sealed) = {
            let st = self.st.borrow();
            let (entries, steps) = if st.active.header.overlaps(walk.from_ms, walk.to_ms) {
                st.active.walk(walk, max, steps_left)
            } else {
                (Vec::new(), 0)
            };
            steps_left -= steps;
            let sealed: Vec<(u64, Header, Rc<D::File>)> = st
                .sealed
                .iter()
                .rev()
                .filter(|(_, s)| s.header.overlaps(walk.from_ms, walk.to_ms))
                .map(|(seq, s)| (*seq, s.header, s.file.clone()))
                .collect();
            (entries, sealed)
        };
        for (seq, header, file) in sealed {
            if entries.len() >= max {
                break;
            }
            if steps_left == 0 {
                found.truncated = true;
                break;
            }
            let name = key_file_name(seq);
            let g = header.geometry;
            let slot_at = g.slot_offset(g.slot_of(walk.hash)) as u64;
            let b = file.read_at(slot_at, 4).await.map_err(|e| io_err(&name, e))?;
            let mut next = match b.get(..4) {
                Some(b) => u32::from_le_bytes(b.try_into().expect("4 bytes")),
                None => return Err(format!("{name}: short read of a slot")),
            };
            while next != 0 && next <= header.entry_count && entries.len() < max {
                if steps_left == 0 {
                    found.truncated = true;
                    break;
                }
                steps_left -= 1;
                let current = next - 1;
                let at = g.entry_offset(current) as u64;
                let b = file.read_at(at, ENTRY_BYTES).await.map_err(|e| io_err(&name, e))?;
                let raw = RawEntry::decode(&b)
                    .ok_or_else(|| format!("{name}: short read of entry {current}"))?;
                use super::layout::Step;
                match walk.step(&raw, current, header.entry_count, header.begin_store_ms) {
                    Step::Match(e, n) => {
                        entries.push(e);
                        next = n;
                    }
                    Step::Skip(n) => next = n,
                    Step::Stop => break,
                }
            }
        }
        if steps_left == 0 {
            found.truncated = true;
        }
        // A batch whose entries straddle a seal is indexed again from the checkpoint after a
        // crash: its entries may be in two files. Report each message once.
        let mut seen = std::collections::HashSet::new();
        entries.retain(|e| seen.insert((e.topic_id, e.queue_id, e.offset)));
        entries.truncate(max);
        found.entries = entries;
        Ok(found)
    }
}

#[cfg(test)]
mod tests;
