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
//! - **Failing operations**: [`SimDir::fail_next`] makes the next `n` operations of one kind
//!   ([`SimOp`]: write, read, fsync, create, fallocate, remove, rename) fail with a chosen errno
//!   (EIO, ENOSPC, ...). [`SimDir::fail_writes`] / [`SimDir::fail_syncs`] are the EIO
//!   shorthands. A failed read returns no bytes; a failed remove or rename changes no name (the
//!   old file stays whole, like the kernel's rename).
//! - **ENOSPC**: [`SimDir::set_capacity`] bounds the total bytes of all files; a write that would
//!   grow past it fails with ENOSPC, and a fallocate that does not fit allocates what fits and
//!   then fails with ENOSPC (real filesystems may keep such partial allocations), so a caller
//!   that does not clean up leaks the space.
//! - **Corruption at rest**: [`SimDir::corrupt`] flips a byte in the durable and volatile images.
//! - **Latency**: [`SimDir::set_latency`] makes every operation of a kind take that long (a disk
//!   whose flushes stall, an unlink of a huge file, a slow fallocate); [`SimDir::pause`] holds
//!   operations of a kind until [`SimDir::resume`], so a test can act while one is provably in
//!   progress ([`SimDir::in_progress`]) without depending on timing.
//! - **Reordered completion**: operations yield to the executor a seeded-random number of times,
//!   so concurrent writes complete out of order.
//!
//! After a crash every file handle and every `SimDir` clone made before it fails with EIO, like
//! a process that died: a task of the old log that is still running cannot touch the files of
//! the log reopened after the crash. Clone the `SimDir` after the crash to open the new log.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use super::file::{LogDir, LogFile, ReadBuf, ALIGN};
use crate::runtime::DmaBuffer;

const SECTOR: usize = 512;

/// The kinds of operation a test can make fail, slow down or hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimOp {
    Write,
    Read,
    /// `sync_data`, `sync_dir` and the fsync inside `write_atomic`.
    Sync,
    /// `sync_filesystem` (syncfs: the queue index checkpoint's one sync).
    SyncFs,
    /// Opening a name that does not exist yet (creating it).
    Create,
    /// `allocate` (fallocate).
    Allocate,
    Remove,
    /// The rename inside `write_atomic`.
    Rename,
}

#[derive(Default)]
struct OpControl {
    /// The next `fail` operations fail with `errno`.
    fail: u32,
    errno: i32,
    latency: Duration,
    paused: bool,
    waiters: Vec<Waker>,
    in_progress: u32,
}

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
    ops: HashMap<SimOp, OpControl>,
    capacity: Option<u64>,
    rng: u64,
    torn_crash: bool,
    max_yields: u32,
    writes: u64,
    syncs: u64,
    reads: u64,
    /// Successful opens (of existing or new files).
    opens: u64,
    /// Successful and failed filesystem syncs (`sync_filesystem`).
    fs_syncs: u64,
    read_bytes: u64,
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
    /// Takes one injected failure of `op`, if any is armed.
    fn take_fault(&mut self, op: SimOp, what: &str) -> Option<io::Error> {
        let c = self.ops.get_mut(&op)?;
        if c.fail == 0 {
            return None;
        }
        c.fail -= 1;
        Some(if c.errno == libc::EIO { eio(what) } else { io::Error::from_raw_os_error(c.errno) })
    }
}

/// Applies the latency and pause configured for `op`, counting the operation as in progress
/// meanwhile. Returns a guard that ends the "in progress" count when dropped.
async fn enter(state: &Rc<RefCell<State>>, op: SimOp) -> InProgress {
    state.borrow_mut().ops.entry(op).or_default().in_progress += 1;
    let guard = InProgress { state: state.clone(), op };
    let latency = state.borrow().ops.get(&op).map_or(Duration::ZERO, |c| c.latency);
    if !latency.is_zero() {
        crate::runtime::sleep(latency).await;
    }
    futures::future::poll_fn(|cx| {
        let mut s = state.borrow_mut();
        let c = s.ops.entry(op).or_default();
        if c.paused {
            c.waiters.push(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    guard
}

struct InProgress {
    state: Rc<RefCell<State>>,
    op: SimOp,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if let Some(c) = self.state.borrow_mut().ops.get_mut(&self.op) {
            c.in_progress -= 1;
        }
    }
}

/// Shared handle to the simulated directory; clone it to keep control after handing it to a log.
pub struct SimDir {
    state: Rc<RefCell<State>>,
    path: PathBuf,
    /// The crash generation this handle belongs to: after a crash, only clones made since
    /// reach the files (see the module documentation).
    generation: u64,
}

impl Clone for SimDir {
    fn clone(&self) -> Self {
        let generation = self.state.borrow().generation;
        SimDir { state: self.state.clone(), path: self.path.clone(), generation }
    }
}

pub struct SimFileHandle {
    file: Rc<RefCell<SimFile>>,
    state: Rc<RefCell<State>>,
    generation: u64,
    /// Opened with `open_buffered`: takes unaligned writes (`write_bytes_at`).
    buffered: bool,
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
                ops: HashMap::new(),
                capacity: None,
                rng: seed | 1,
                torn_crash: false,
                max_yields: 3,
                writes: 0,
                syncs: 0,
                reads: 0,
                opens: 0,
                fs_syncs: 0,
                read_bytes: 0,
            })),
            path: PathBuf::from("/sim"),
            generation: 0,
        }
    }

    /// Keep a random subset of unsynced sectors on crash instead of none.
    pub fn set_torn_crash(&self, on: bool) {
        self.state.borrow_mut().torn_crash = on;
    }
    /// The next `n` operations of kind `op` fail with `errno` (e.g. `libc::EIO`, `libc::ENOSPC`).
    pub fn fail_next(&self, op: SimOp, n: u32, errno: i32) {
        let mut s = self.state.borrow_mut();
        let c = s.ops.entry(op).or_default();
        c.fail = n;
        c.errno = errno;
    }
    /// The next `n` writes fail with EIO.
    pub fn fail_writes(&self, n: u32) {
        self.fail_next(SimOp::Write, n, libc::EIO);
    }
    /// Every later operation of kind `op` takes `delay` before it completes.
    pub fn set_latency(&self, op: SimOp, delay: Duration) {
        self.state.borrow_mut().ops.entry(op).or_default().latency = delay;
    }
    /// Every later file and directory sync (`sync_data`, `sync_dir`, the fsync inside
    /// `write_atomic`; not `sync_filesystem`) takes `delay` before it completes.
    pub fn set_sync_delay(&self, delay: Duration) {
        self.set_latency(SimOp::Sync, delay);
    }
    /// The next `n` file and directory syncs fail with EIO (not `sync_filesystem`, which is
    /// [`SimOp::SyncFs`]).
    pub fn fail_syncs(&self, n: u32) {
        self.fail_next(SimOp::Sync, n, libc::EIO);
    }
    /// Holds every operation of kind `op` (started now or later) until [`Self::resume`].
    pub fn pause(&self, op: SimOp) {
        self.state.borrow_mut().ops.entry(op).or_default().paused = true;
    }
    /// Lets held operations of kind `op` continue.
    pub fn resume(&self, op: SimOp) {
        let waiters = {
            let mut s = self.state.borrow_mut();
            let c = s.ops.entry(op).or_default();
            c.paused = false;
            std::mem::take(&mut c.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }
    /// Operations of kind `op` started and not yet finished (including held ones).
    pub fn in_progress(&self, op: SimOp) -> u32 {
        self.state.borrow().ops.get(&op).map_or(0, |c| c.in_progress)
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
    /// Files opened so far (created ones included).
    pub fn open_count(&self) -> u64 {
        self.state.borrow().opens
    }
    /// Filesystem syncs so far (`sync_filesystem`; not counted in [`Self::op_counts`]).
    pub fn fs_sync_count(&self) -> u64 {
        self.state.borrow().fs_syncs
    }
    /// Reads performed so far (of any file, failed ones included).
    pub fn read_count(&self) -> u64 {
        self.state.borrow().reads
    }

    /// Bytes returned by reads so far.
    pub fn read_bytes(&self) -> u64 {
        self.state.borrow().read_bytes
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

    /// Current (volatile) bytes of a file, if it exists (e.g. to compare two logs).
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        self.state.borrow().names.get(name).map(|f| f.borrow().volatile.clone())
    }

    /// Names in the directory now (volatile view).
    pub fn names(&self) -> Vec<String> {
        self.state.borrow().names.keys().cloned().collect()
    }

    /// Removes a name at once and durably, as an operator's `rm` would (test set-up only).
    pub fn remove_now(&self, name: &str) {
        let mut s = self.state.borrow_mut();
        s.names.remove(name);
        s.durable_names.remove(name);
    }

    async fn jitter(&self) {
        jitter(&self.state).await
    }

    fn check_alive(&self, what: &str) -> io::Result<()> {
        if self.state.borrow().generation != self.generation {
            return Err(eio(&format!("{what} (directory handle from before a crash)")));
        }
        Ok(())
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

    /// A write at any alignment: the same faults, capacity and crash model as every write.
    async fn write_bytes(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        jitter(&self.state).await;
        let _op = enter(&self.state, SimOp::Write).await;
        self.check_alive("write")?;
        let mut s = self.state.borrow_mut();
        s.writes += 1;
        if let Some(e) = s.take_fault(SimOp::Write, "write") {
            return Err(e);
        }
        let end = pos as usize + bytes.len();
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
        f.volatile[pos as usize..end].copy_from_slice(bytes);
        f.unsynced.push((pos as usize, end));
        Ok(())
    }
}

impl LogFile for SimFileHandle {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        assert_eq!(pos % ALIGN, 0, "unaligned write position {pos}");
        assert_eq!(buf.len() as u64 % ALIGN, 0, "unaligned write length {}", buf.len());
        self.write_bytes(buf.as_bytes(), pos).await
    }

    async fn write_bytes_at(&self, bytes: Vec<u8>, pos: u64) -> io::Result<()> {
        if !self.buffered {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an unaligned write at {pos} to a file opened with O_DIRECT"),
            ));
        }
        self.write_bytes(&bytes, pos).await
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<ReadBuf> {
        jitter(&self.state).await;
        let _op = enter(&self.state, SimOp::Read).await;
        self.check_alive("read")?;
        self.state.borrow_mut().reads += 1;
        if let Some(e) = self.state.borrow_mut().take_fault(SimOp::Read, "read") {
            return Err(e);
        }
        let f = self.file.borrow();
        let start = (pos as usize).min(f.volatile.len());
        let end = (pos as usize + len).min(f.volatile.len());
        self.state.borrow_mut().read_bytes += (end - start) as u64;
        Ok(ReadBuf::from_vec(f.volatile[start..end].to_vec()))
    }

    async fn sync_data(&self) -> io::Result<()> {
        jitter(&self.state).await;
        let _op = enter(&self.state, SimOp::Sync).await;
        self.check_alive("fsync")?;
        let mut s = self.state.borrow_mut();
        s.syncs += 1;
        if let Some(e) = s.take_fault(SimOp::Sync, "fsync") {
            // Like Linux after a failed writeback: the dirty state is dropped, so the data may
            // be gone even though the page cache "has" it. Callers must not retry and trust it.
            let mut f = self.file.borrow_mut();
            f.unsynced.clear();
            return Err(e);
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
        let _op = enter(&self.state, SimOp::Allocate).await;
        self.check_alive("fallocate")?;
        let mut len = len;
        let mut no_space = None;
        {
            let mut s = self.state.borrow_mut();
            if let Some(e) = s.take_fault(SimOp::Allocate, "fallocate") {
                return Err(e);
            }
            let have = self.file.borrow().volatile.len() as u64;
            let grow = len.saturating_sub(have);
            if let Some(cap) = s.capacity {
                let free = cap.saturating_sub(s.used());
                if grow > free {
                    // Allocate what fits, then fail (see the fault model).
                    len = have + free;
                    no_space = Some(io::Error::from_raw_os_error(libc::ENOSPC));
                }
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
        match no_space {
            Some(e) => Err(e),
            None => Ok(()),
        }
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
        self.check_alive("open")?;
        let creating = create && !self.state.borrow().names.contains_key(name);
        let _op = if creating { Some(enter(&self.state, SimOp::Create).await) } else { None };
        self.check_alive("open")?;
        let mut s = self.state.borrow_mut();
        let file = match s.names.get(name) {
            Some(f) => f.clone(),
            None if create => {
                if let Some(e) = s.take_fault(SimOp::Create, "create") {
                    return Err(e);
                }
                let f = Rc::new(RefCell::new(SimFile::default()));
                s.names.insert(name.to_string(), f.clone());
                f
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        s.opens += 1;
        Ok(SimFileHandle {
            file,
            state: self.state.clone(),
            generation: s.generation,
            buffered: false,
        })
    }

    async fn open_buffered(&self, name: &str, create: bool) -> io::Result<SimFileHandle> {
        // Writes are volatile until synced in every mode: the same model, with unaligned
        // writes allowed.
        let mut f = self.open(name, create).await?;
        f.buffered = true;
        Ok(f)
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        self.jitter().await;
        let _op = enter(&self.state, SimOp::Remove).await;
        self.check_alive("remove")?;
        let mut s = self.state.borrow_mut();
        if let Some(e) = s.take_fault(SimOp::Remove, "remove") {
            return Err(e);
        }
        s.names.remove(name).map(|_| ()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        self.check_alive("list")?;
        Ok(self.state.borrow().names.keys().cloned().collect())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.jitter().await;
        let _op = enter(&self.state, SimOp::Sync).await;
        self.check_alive("directory fsync")?;
        let mut s = self.state.borrow_mut();
        if let Some(e) = s.take_fault(SimOp::Sync, "directory fsync") {
            return Err(e);
        }
        s.durable_names = s.names.clone();
        Ok(())
    }

    async fn sync_filesystem(&self) -> io::Result<()> {
        self.jitter().await;
        let _op = enter(&self.state, SimOp::SyncFs).await;
        self.check_alive("syncfs")?;
        let mut s = self.state.borrow_mut();
        s.fs_syncs += 1;
        if let Some(e) = s.take_fault(SimOp::SyncFs, "syncfs") {
            // As a failed fdatasync, for every file: the dirty state is dropped.
            for f in s.names.values() {
                f.borrow_mut().unsynced.clear();
            }
            return Err(e);
        }
        for f in s.names.values() {
            let mut f = f.borrow_mut();
            f.durable = f.volatile.clone();
            f.unsynced.clear();
        }
        s.durable_names = s.names.clone();
        Ok(())
    }

    async fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.jitter().await;
        let _op = enter(&self.state, SimOp::Rename).await;
        self.check_alive("write_atomic")?;
        let mut s = self.state.borrow_mut();
        if let Some(e) = s.take_fault(SimOp::Sync, "fsync of metadata file") {
            return Err(e);
        }
        if let Some(e) = s.take_fault(SimOp::Rename, &format!("rename of {name}.tmp")) {
            return Err(e);
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
        self.check_alive("read")?;
        let mut s = self.state.borrow_mut();
        if !s.names.contains_key(name) {
            return Ok(None);
        }
        if let Some(e) = s.take_fault(SimOp::Read, &format!("read of {name}")) {
            return Err(e);
        }
        Ok(s.names.get(name).map(|f| f.borrow().volatile.clone()))
    }

    async fn disk_usage(&self) -> io::Result<(u64, u64)> {
        let s = self.state.borrow();
        Ok((s.used(), s.capacity.unwrap_or(u64::MAX / 2)))
    }
}
