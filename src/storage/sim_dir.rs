//! A simulated, fault-injecting [`LogDir`] for tests. It lives in memory on one executor.
//!
//! # Fault model
//! - **Lost unsynced writes**: every file has a durable image and a volatile image. Writes
//!   change the volatile image; `sync_data` copies it to the durable image. [`SimDir::crash`]
//!   throws the volatile images away.
//! - **Torn writes**: with `torn_crash`, a crash keeps a random subset of the 512-byte sectors of
//!   unsynced writes (what a power cut does to a drive's write cache), so the recovered file can
//!   hold half-written batches and stale bytes after the durable prefix.
//! - **Unsynced directory changes**: a created or removed name only survives a crash after
//!   `sync_dir`.
//! - **EIO on write or fsync**: [`SimDir::fail_writes`] / [`SimDir::fail_syncs`] make the next
//!   operations fail with EIO.
//! - **ENOSPC**: [`SimDir::set_capacity`] bounds the total bytes of all files; a write that would
//!   grow past it fails with ENOSPC.
//! - **Corruption at rest**: [`SimDir::corrupt`] flips a byte in the durable and volatile images.
//! - **Reordered completion**: operations yield to the executor a seeded-random number of times,
//!   so concurrent writes complete out of order.
//!
//! After a crash every handle opened before it fails with EIO, like a process that died.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::file::{LogDir, LogFile, ReadBuf, ALIGN};
use crate::runtime::DmaBuffer;

const SECTOR: usize = 512;

#[derive(Default)]
struct SimFile {
    durable: Vec<u8>,
    volatile: Vec<u8>,
    /// Sector-aligned ranges written since the last sync (for torn crashes).
    unsynced: Vec<(usize, usize)>,
}

struct State {
    /// Names as a crash would leave them (only updated by sync_dir).
    durable_names: BTreeMap<String, Rc<RefCell<SimFile>>>,
    names: BTreeMap<String, Rc<RefCell<SimFile>>>,
    generation: u64,
    fail_writes: u32,
    fail_syncs: u32,
    capacity: Option<u64>,
    rng: u64,
    torn_crash: bool,
    max_yields: u32,
    writes: u64,
    syncs: u64,
}

impl State {
    fn next_rand(&mut self) -> u64 {
        // xorshift64*: deterministic for a seed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn used(&self) -> u64 {
        self.names.values().map(|f| f.borrow().volatile.len() as u64).sum()
    }
}

/// Shared handle to the simulated directory; clone it to keep control after handing it to a log.
#[derive(Clone)]
pub struct SimDir {
    state: Rc<RefCell<State>>,
    path: PathBuf,
}

pub struct SimFileHandle {
    file: Rc<RefCell<SimFile>>,
    state: Rc<RefCell<State>>,
    generation: u64,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO (Input/output error) on {what}"))
}

impl SimDir {
    pub fn new(seed: u64) -> Self {
        SimDir {
            state: Rc::new(RefCell::new(State {
                durable_names: BTreeMap::new(),
                names: BTreeMap::new(),
                generation: 0,
                fail_writes: 0,
                fail_syncs: 0,
                capacity: None,
                rng: seed | 1,
                torn_crash: false,
                max_yields: 3,
                writes: 0,
                syncs: 0,
            })),
            path: PathBuf::from("/sim"),
        }
    }

    /// Keep a random subset of unsynced sectors on crash instead of none.
    pub fn set_torn_crash(&self, on: bool) {
        self.state.borrow_mut().torn_crash = on;
    }
    /// The next `n` writes fail with EIO.
    pub fn fail_writes(&self, n: u32) {
        self.state.borrow_mut().fail_writes = n;
    }
    /// The next `n` syncs fail with EIO.
    pub fn fail_syncs(&self, n: u32) {
        self.state.borrow_mut().fail_syncs = n;
    }
    /// Total bytes all files may hold; None for unlimited.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.borrow_mut().capacity = bytes;
    }
    /// (writes, syncs) performed so far.
    pub fn op_counts(&self) -> (u64, u64) {
        let s = self.state.borrow();
        (s.writes, s.syncs)
    }

    /// Simulates a power cut: unsynced data and unsynced names are lost (or torn), and every
    /// handle opened before now stops working.
    pub fn crash(&self) {
        let mut s = self.state.borrow_mut();
        s.generation += 1;
        let torn = s.torn_crash;
        let names: Vec<(String, Rc<RefCell<SimFile>>)> =
            s.durable_names.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (_, f) in &names {
            let mut f = f.borrow_mut();
            let mut image = f.durable.clone();
            if torn {
                let ranges = std::mem::take(&mut f.unsynced);
                for (start, end) in ranges {
                    let mut sec = start;
                    while sec < end {
                        if s.next_rand() % 2 == 0 && sec < f.volatile.len() {
                            let hi = (sec + SECTOR).min(f.volatile.len());
                            if image.len() < hi {
                                image.resize(hi, 0);
                            }
                            image[sec..hi].copy_from_slice(&f.volatile[sec..hi]);
                        }
                        sec += SECTOR;
                    }
                }
            }
            f.unsynced.clear();
            f.durable = image.clone();
            f.volatile = image;
        }
        s.names = names.into_iter().collect();
    }

    /// Flips one byte of a file in both images (corruption at rest).
    pub fn corrupt(&self, name: &str, offset: usize) {
        let s = self.state.borrow();
        let f = s.names.get(name).expect("corrupt: no such file");
        let mut f = f.borrow_mut();
        if offset < f.durable.len() {
            f.durable[offset] ^= 0x5A;
        }
        if offset < f.volatile.len() {
            f.volatile[offset] ^= 0x5A;
        }
    }

    /// Current (volatile) size of a file, if it exists.
    pub fn file_len(&self, name: &str) -> Option<usize> {
        self.state.borrow().names.get(name).map(|f| f.borrow().volatile.len())
    }

    async fn jitter(&self) {
        jitter(&self.state).await
    }
}

async fn jitter(state: &Rc<RefCell<State>>) {
    let n = {
        let mut s = state.borrow_mut();
        let max = s.max_yields as u64 + 1;
        s.next_rand() % max
    };
    for _ in 0..n {
        crate::runtime::yield_once().await;
    }
}

impl SimFileHandle {
    fn check_alive(&self, what: &str) -> io::Result<()> {
        if self.state.borrow().generation != self.generation {
            return Err(eio(&format!("{what} (handle from before a crash)")));
        }
        Ok(())
    }
}

impl LogFile for SimFileHandle {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        assert_eq!(pos % ALIGN, 0, "unaligned write position {pos}");
        assert_eq!(buf.len() as u64 % ALIGN, 0, "unaligned write length {}", buf.len());
        jitter(&self.state).await;
        self.check_alive("write")?;
        let mut s = self.state.borrow_mut();
        s.writes += 1;
        if s.fail_writes > 0 {
            s.fail_writes -= 1;
            return Err(eio("write"));
        }
        let end = pos as usize + buf.len();
        let grow = end.saturating_sub(self.file.borrow().volatile.len()) as u64;
        if let Some(cap) = s.capacity {
            if s.used() + grow > cap {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        drop(s);
        let mut f = self.file.borrow_mut();
        if f.volatile.len() < end {
            f.volatile.resize(end, 0);
        }
        f.volatile[pos as usize..end].copy_from_slice(buf.as_bytes());
        f.unsynced.push((pos as usize, end));
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<ReadBuf> {
        jitter(&self.state).await;
        self.check_alive("read")?;
        let f = self.file.borrow();
        let start = (pos as usize).min(f.volatile.len());
        let end = (pos as usize + len).min(f.volatile.len());
        Ok(ReadBuf::from_vec(f.volatile[start..end].to_vec()))
    }

    async fn sync_data(&self) -> io::Result<()> {
        jitter(&self.state).await;
        self.check_alive("fsync")?;
        let mut s = self.state.borrow_mut();
        s.syncs += 1;
        if s.fail_syncs > 0 {
            s.fail_syncs -= 1;
            // Like Linux after a failed writeback: the dirty state is dropped, so the data may
            // be gone even though the page cache "has" it. Callers must not retry and trust it.
            let mut f = self.file.borrow_mut();
            f.unsynced.clear();
            return Err(eio("fsync"));
        }
        drop(s);
        let mut f = self.file.borrow_mut();
        f.durable = f.volatile.clone();
        f.unsynced.clear();
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.check_alive("truncate")?;
        let mut f = self.file.borrow_mut();
        f.volatile.resize(len as usize, 0);
        // ftruncate's size change is metadata; model it as durable on the next sync only.
        f.unsynced.retain(|(s, _)| (*s as u64) < len);
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.check_alive("fallocate")?;
        {
            let s = self.state.borrow();
            let grow = len.saturating_sub(self.file.borrow().volatile.len() as u64);
            if s.capacity.is_some_and(|cap| s.used() + grow > cap) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let mut f = self.file.borrow_mut();
        if (f.volatile.len() as u64) < len {
            f.volatile.resize(len as usize, 0);
        }
        // Like fallocate + fdatasync of the size: durable once the file is synced; model it
        // as durable at once for simplicity (the zeros carry no data).
        if (f.durable.len() as u64) < len {
            f.durable.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        self.check_alive("stat")?;
        Ok(self.file.borrow().volatile.len() as u64)
    }

    async fn close(&self) -> io::Result<()> {
        Ok(())
    }
}

impl LogDir for SimDir {
    type File = SimFileHandle;

    fn path(&self) -> &Path {
        &self.path
    }

    async fn open(&self, name: &str, create: bool) -> io::Result<SimFileHandle> {
        self.jitter().await;
        let mut s = self.state.borrow_mut();
        let file = match s.names.get(name) {
            Some(f) => f.clone(),
            None if create => {
                let f = Rc::new(RefCell::new(SimFile::default()));
                s.names.insert(name.to_string(), f.clone());
                f
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(SimFileHandle { file, state: self.state.clone(), generation: s.generation })
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        self.jitter().await;
        let mut s = self.state.borrow_mut();
        s.names.remove(name).map(|_| ()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.borrow().names.keys().cloned().collect())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.jitter().await;
        let mut s = self.state.borrow_mut();
        if s.fail_syncs > 0 {
            s.fail_syncs -= 1;
            return Err(eio("directory fsync"));
        }
        s.durable_names = s.names.clone();
        Ok(())
    }

    async fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.jitter().await;
        let mut s = self.state.borrow_mut();
        if s.fail_syncs > 0 {
            s.fail_syncs -= 1;
            return Err(eio("fsync of metadata file"));
        }
        if let Some(cap) = s.capacity {
            if s.used() + bytes.len() as u64 > cap {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let f = Rc::new(RefCell::new(SimFile {
            durable: bytes.to_vec(),
            volatile: bytes.to_vec(),
            unsynced: Vec::new(),
        }));
        s.names.insert(name.to_string(), f.clone());
        s.durable_names.insert(name.to_string(), f);
        Ok(())
    }

    async fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.state.borrow().names.get(name).map(|f| f.borrow().volatile.clone()))
    }

    fn disk_usage(&self) -> io::Result<(u64, u64)> {
        let s = self.state.borrow();
        Ok((s.used(), s.capacity.unwrap_or(u64::MAX / 2)))
    }
}
