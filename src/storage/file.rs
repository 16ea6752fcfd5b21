//! The storage seam: the narrow interface between the commit log and the files it lives in.
//!
//! The log never calls the filesystem directly; it goes through a [`LogDir`] and its
//! [`LogFile`]s. Production uses [`super::dma_dir::DmaDir`] (glommio `DmaFile` with O_DIRECT,
//! or page-cache files in buffered mode). Tests use [`super::sim_dir::SimDir`], an in-memory
//! directory that injects the faults real disks have (see its header for the fault model).
//!
//! Contract:
//! - `write_at` writes the whole buffer at `pos`; both are multiples of [`ALIGN`]. A short write
//!   is reported as an error by the implementation, never as success.
//! - `write_bytes_at` does the same at any position and length, for files opened with
//!   `open_buffered` only (the page cache takes unaligned writes; O_DIRECT does not).
//! - Written data is durable only after a later `sync_data` on the same file returns Ok.
//! - A created or removed file name is durable only after `sync_dir` returns Ok.
//! - `read_at` may return fewer bytes than asked only at the end of the file.

use std::io;
use std::ops::Deref;
use std::path::Path;
use std::rc::Rc;

use crate::runtime::{DmaBuffer, ReadResult};

/// Alignment of direct-I/O offsets and lengths.
pub const ALIGN: u64 = 4096;

pub fn align_down(v: u64) -> u64 {
    v & !(ALIGN - 1)
}
pub fn align_up(v: u64) -> u64 {
    (v + ALIGN - 1) & !(ALIGN - 1)
}

/// Bytes read from a file or cache, shared without copying.
#[derive(Clone, Debug)]
pub enum ReadBuf {
    Dma(ReadResult),
    Chunk { buf: Rc<DmaBuffer>, start: usize, len: usize },
    Heap(Rc<Vec<u8>>, usize, usize),
}

impl ReadBuf {
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        ReadBuf::Heap(Rc::new(v), 0, len)
    }

    /// A sub-range of these bytes, sharing the same memory. Panics if out of range.
    pub fn slice(&self, start: usize, len: usize) -> ReadBuf {
        assert!(start + len <= self.len(), "slice {start}+{len} beyond {}", self.len());
        match self {
            ReadBuf::Dma(r) => ReadBuf::Dma(ReadResult::slice(r, start, len).expect("in range")),
            ReadBuf::Chunk { buf, start: s, .. } => {
                ReadBuf::Chunk { buf: buf.clone(), start: s + start, len }
            }
            ReadBuf::Heap(v, s, _) => ReadBuf::Heap(v.clone(), s + start, len),
        }
    }
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Dma(r) => r,
            ReadBuf::Chunk { buf, start, len } => &buf.as_bytes()[*start..*start + *len],
            ReadBuf::Heap(v, s, l) => &v[*s..*s + *l],
        }
    }
}

/// One open segment or metadata file.
#[allow(async_fn_in_trait)]
pub trait LogFile {
    /// Writes all of `buf` at `pos` (both aligned to [`ALIGN`]).
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()>;
    /// Writes all of `bytes` at `pos`, any alignment: only on a file opened with
    /// [`LogDir::open_buffered`] (an O_DIRECT file answers `InvalidInput`).
    async fn write_bytes_at(&self, bytes: Vec<u8>, pos: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos` (any alignment); shorter only at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<ReadBuf>;
    /// Makes every completed write to this file durable.
    async fn sync_data(&self) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Reserves disk space so the file is at least `len` bytes long; the new bytes read as
    /// zeros (fallocate without KEEP_SIZE).
    async fn allocate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    async fn close(&self) -> io::Result<()>;
}

/// A directory of log files.
#[allow(async_fn_in_trait)]
pub trait LogDir {
    type File: LogFile;
    fn path(&self) -> &Path;
    /// Opens `name` for reading and writing, creating it when `create`.
    async fn open(&self, name: &str, create: bool) -> io::Result<Self::File>;
    /// [`Self::open`] through the page cache whatever the directory's I/O mode: for the queue
    /// index's small scattered writes, which the page cache absorbs and one
    /// [`Self::sync_filesystem`] writes out together.
    async fn open_buffered(&self, name: &str, create: bool) -> io::Result<Self::File>;
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// File names in the directory (no sub-directories).
    async fn list(&self) -> io::Result<Vec<String>>;
    /// Makes created and removed names durable.
    async fn sync_dir(&self) -> io::Result<()>;
    /// Makes every completed write to every file of the filesystem holding the directory
    /// durable, names included, with one call (`syncfs`): what the index checkpoint uses
    /// instead of an fdatasync per written index file. Also reports a write-back failure of
    /// any file of that filesystem since the directory was opened.
    async fn sync_filesystem(&self) -> io::Result<()>;
    /// Replaces `name` with `bytes` atomically and durably (temp file, sync, rename, sync dir).
    async fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Whole contents of a small file, or None if it does not exist.
    async fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// (used, total) bytes of the filesystem holding the directory; the total counts only what
    /// this process may still write besides what is used (as `df` does).
    async fn disk_usage(&self) -> io::Result<(u64, u64)>;
}
