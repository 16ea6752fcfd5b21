//! The production [`LogDir`]: glommio files on a real filesystem.
//!
//! `io_mode = direct` opens segments with O_DIRECT (glommio `DmaFile`): writes go from our DMA
//! chunks straight to the device through io_uring, no page cache, no extra copy.
//! `io_mode = buffered` uses glommio `BufferedFile` (page cache + fdatasync); it copies each
//! chunk into a `Vec` because that is what the buffered API takes. The queue index's files
//! are always buffered ([`LogDir::open_buffered`]): their writes are 4 KiB per queue, scattered
//! over thousands of files, and one `syncfs` per checkpoint makes them durable.
//!
//! Opening checks what users get wrong: a missing or unwritable directory, and a filesystem that
//! rejects O_DIRECT (tmpfs, some overlay/network filesystems) — then the error names
//! `io_mode = "buffered"`.
//!
//! No blocking syscall runs on the shard thread: reads, writes, fsync, fallocate, open and
//! directory fsync go through io_uring; unlink and rename through glommio's blocking thread
//! pool (`glommio::io::remove`/`rename`, one helper thread per executor, so a slow unlink of a
//! 1 GiB segment stalls no produce or fetch); listing the directory, reading a small metadata
//! file whole, `statvfs`, `syncfs` and the checks at open run on the same pool
//! (`off_thread`).
//!
//! glommio quirk handled here: it probes whether a device supports polled I/O (IOPOLL) by
//! reading from the first file opened on it, and caches the answer per thread. A probe read of
//! an *empty* file succeeds trivially, so on devices without polling (virtio, most cloud disks)
//! every later read failed with EOPNOTSUPP. We open a non-empty probe file first so the probe
//! gives the true answer.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::{BufferedFile, DmaFile, OpenOptions};

use super::config::IoMode;
use super::file::{LogDir, LogFile, ReadBuf, ALIGN};
use crate::runtime::DmaBuffer;

const PROBE_NAME: &str = ".io_probe";

pub struct DmaDir {
    path: PathBuf,
    mode: IoMode,
    /// The directory, open for the log's life: `syncfs` reports write-back errors of the
    /// filesystem since the descriptor was opened, so it must not be opened per call.
    handle: Arc<std::fs::File>,
}

thread_local! {
    /// Traced file reads in flight on this thread (a shard's executor).
    static READS_IN_FLIGHT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A file read's trace event (`--log-level ringmq::storage::dma_dir=trace`): where and how
/// much it read, how long it took (from its first poll to its task seeing the result), and
/// how many of this thread's reads were in flight when it started and when it ended (itself
/// included in both): enough to tell a disk answering slowly from reads issued one after the
/// other. Costs nothing unless that level is on.
struct ReadTrace {
    started: std::time::Instant,
    in_flight_at_start: u32,
}

impl ReadTrace {
    fn start() -> Option<ReadTrace> {
        if !tracing::enabled!(tracing::Level::TRACE) {
            return None;
        }
        let in_flight_at_start = READS_IN_FLIGHT.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        Some(ReadTrace { started: std::time::Instant::now(), in_flight_at_start })
    }

    fn done(self, pos: u64, len: usize) {
        tracing::trace!(
            pos,
            len,
            us = self.started.elapsed().as_micros() as u64,
            in_flight_at_start = self.in_flight_at_start,
            in_flight = READS_IN_FLIGHT.with(|n| n.get()),
            "file read"
        );
    }
}

impl Drop for ReadTrace {
    fn drop(&mut self) {
        READS_IN_FLIGHT.with(|n| n.set(n.get() - 1));
    }
}

pub enum DmaLogFile {
    Direct(DmaFile),
    Buffered(BufferedFile),
}

impl DmaDir {
    /// Opens (creating if needed) the directory and checks it can hold a log in `mode`.
    /// Errors are meant for users: they say what is wrong and what to change.
    pub async fn open(path: &Path, mode: IoMode) -> Result<DmaDir, String> {
        let dir = path.to_path_buf();
        off_thread(move || check_dir(&dir, mode)).await?;
        let probe = path.join(PROBE_NAME);
        if mode == IoMode::Direct {
            // Prime glommio's per-device IOPOLL probe with a file that has data (see module doc).
            let f = DmaFile::open(&probe)
                .await
                .map_err(|e| format!("cannot open {} for direct I/O: {e}", probe.display()))?;
            let _ = f.close().await;
        }
        let dir = path.to_path_buf();
        let handle = off_thread(move || std::fs::File::open(&dir))
            .await
            .map_err(|e| format!("cannot open data directory {}: {e}", path.display()))?;
        Ok(DmaDir { path: path.to_path_buf(), mode, handle: Arc::new(handle) })
    }
}

/// Creates the directory and checks it is writable (and takes O_DIRECT in direct mode).
/// Blocking: run it with [`off_thread`].
fn check_dir(path: &Path, mode: IoMode) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| {
        format!(
            "cannot create data directory {}: {e} (check the path and its permissions)",
            path.display()
        )
    })?;
    let probe = path.join(PROBE_NAME);
    std::fs::write(&probe, vec![0u8; ALIGN as usize])
        .map_err(|e| format!("data directory {} is not writable: {e}", path.display()))?;
    if mode == IoMode::Direct {
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe);
        match direct {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(format!(
                    "the filesystem holding {} does not support O_DIRECT (tmpfs and some \
                     overlay or network filesystems do not); set io_mode = \"buffered\" in \
                     the [storage] config or move the data directory to a local disk \
                     (ext4, xfs)",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("cannot open {} with O_DIRECT: {e}", probe.display())),
        }
    }
    Ok(())
}

/// Runs a blocking filesystem call on the executor's blocking thread pool, so the shard
/// thread keeps serving meanwhile.
async fn off_thread<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(f).await
}

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, op, path, .. } => io::Error::new(
            source.kind(),
            format!("{op} {}: {source}", path.map(|p| p.display().to_string()).unwrap_or_default()),
        ),
        other => io::Error::other(other.to_string()),
    }
}

/// A write of `len` bytes at `pos` that wrote `written`: a short write (the kernel wrote a
/// prefix; ENOSPC is the usual cause) is a failure.
fn whole_write(written: usize, len: usize, pos: u64) -> io::Result<()> {
    if written != len {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write at {pos}: {written} of {len} bytes (disk full?)"),
        ));
    }
    Ok(())
}

impl LogFile for DmaLogFile {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        match self {
            DmaLogFile::Direct(f) => {
                let len = buf.len();
                whole_write(f.write_rc_at(buf, pos).await.map_err(to_io)?, len, pos)
            }
            DmaLogFile::Buffered(_) => self.write_bytes_at(buf.as_bytes().to_vec(), pos).await,
        }
    }

    async fn write_bytes_at(&self, bytes: Vec<u8>, pos: u64) -> io::Result<()> {
        let DmaLogFile::Buffered(f) = self else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an unaligned write at {pos} to a file opened with O_DIRECT"),
            ));
        };
        let len = bytes.len();
        whole_write(f.write_at(bytes, pos).await.map_err(to_io)?, len, pos)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<ReadBuf> {
        let traced = ReadTrace::start();
        let r = match self {
            DmaLogFile::Direct(f) => f.read_at(pos, len).await.map_err(to_io)?,
            DmaLogFile::Buffered(f) => f.read_at(pos, len).await.map_err(to_io)?,
        };
        if let Some(t) = traced {
            t.done(pos, len);
        }
        Ok(ReadBuf::Dma(r))
    }

    async fn sync_data(&self) -> io::Result<()> {
        match self {
            DmaLogFile::Direct(f) => f.fdatasync().await.map_err(to_io),
            DmaLogFile::Buffered(f) => f.fdatasync().await.map_err(to_io),
        }
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        match self {
            DmaLogFile::Direct(f) => f.truncate(len).await.map_err(to_io),
            DmaLogFile::Buffered(f) => f.truncate(len).await.map_err(to_io),
        }
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        match self {
            DmaLogFile::Direct(f) => f.pre_allocate(len, false).await.map_err(to_io),
            DmaLogFile::Buffered(f) => f.pre_allocate(len, false).await.map_err(to_io),
        }
    }

    async fn size(&self) -> io::Result<u64> {
        match self {
            DmaLogFile::Direct(f) => f.file_size().await.map_err(to_io),
            DmaLogFile::Buffered(f) => f.file_size().await.map_err(to_io),
        }
    }

    async fn close(&self) -> io::Result<()> {
        // glommio closes on drop; nothing is buffered in user space for either mode.
        Ok(())
    }
}

impl LogDir for DmaDir {
    type File = DmaLogFile;

    fn path(&self) -> &Path {
        &self.path
    }

    async fn open(&self, name: &str, create: bool) -> io::Result<DmaLogFile> {
        let path = self.path.join(name);
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(create);
        match self.mode {
            IoMode::Direct => Ok(DmaLogFile::Direct(opts.dma_open(&path).await.map_err(to_io)?)),
            IoMode::Buffered => {
                Ok(DmaLogFile::Buffered(opts.buffered_open(&path).await.map_err(to_io)?))
            }
        }
    }

    async fn open_buffered(&self, name: &str, create: bool) -> io::Result<DmaLogFile> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(create);
        let f = opts.buffered_open(&self.path.join(name)).await.map_err(to_io)?;
        Ok(DmaLogFile::Buffered(f))
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        glommio::io::remove(self.path.join(name)).await.map_err(to_io)
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        let path = self.path.clone();
        off_thread(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    if let Some(name) = entry.file_name().to_str() {
                        out.push(name.to_string());
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let dir = glommio::io::Directory::open(&self.path).await.map_err(to_io)?;
        dir.sync().await.map_err(to_io)
    }

    async fn sync_filesystem(&self) -> io::Result<()> {
        let handle = self.handle.clone();
        off_thread(move || {
            // SAFETY: syncfs takes a descriptor, which `handle` keeps open during the call.
            if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
        .await
    }

    async fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.join(format!("{name}.tmp"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(&tmp)
            .await
            .map_err(to_io)?;
        let n = f.write_at(bytes.to_vec(), 0).await.map_err(to_io)?;
        if n != bytes.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write of {name}")));
        }
        f.fdatasync().await.map_err(to_io)?;
        f.close().await.map_err(to_io)?;
        glommio::io::rename(&tmp, self.path.join(name)).await.map_err(to_io)?;
        self.sync_dir().await
    }

    async fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let path = self.path.join(name);
        off_thread(move || match std::fs::read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn disk_usage(&self) -> io::Result<(u64, u64)> {
        let path = self.path.clone();
        off_thread(move || statvfs_usage(&path)).await
    }
}

/// (used, total) bytes of the filesystem holding `path`, as retention counts them against
/// `disk_max_used_ratio`. Blocking (a statvfs).
pub fn statvfs_usage(path: &Path) -> io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("data path contains a NUL byte"))?;
    // SAFETY: statvfs fills the struct for a valid NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usage(s.f_blocks as u64, s.f_bfree as u64, s.f_bavail as u64, s.f_frsize as u64))
}

/// (used, total) from statvfs counts of `frsize`-byte blocks, as `df` counts them: the total
/// is what is used plus what this process may still write (`f_bavail`). Blocks reserved for
/// root or for another uid are not room the log can fill; counting them (`f_bfree`) made a
/// disk the broker could no longer write look partly empty, so `disk_max_used_ratio` never
/// deleted anything before appends got DISK_FULL, and DISK_FULL errors named free space that
/// could not be used.
fn usage(blocks: u64, bfree: u64, bavail: u64, frsize: u64) -> (u64, u64) {
    let used = blocks.saturating_sub(bfree).saturating_mul(frsize);
    (used, used.saturating_add(bavail.saturating_mul(frsize)))
}

#[cfg(test)]
mod tests {
    use super::usage;

    const GB: u64 = 1_000_000_000;

    #[test]
    fn usage_counts_only_the_space_this_process_can_write() {
        // This VM's root filesystem (`resv_strict`, blocks reserved for another uid): 270 GB,
        // 254 GB free, 81 GB of it writable by the broker. Full for the broker means full.
        assert_eq!(usage(270, 254, 81, GB), (16 * GB, 97 * GB));
        let (used, total) = usage(270, 173, 0, GB);
        assert_eq!(used, total, "no block left to write: 100% used");
        // An ordinary ext4 with 5% reserved for root, seen by a non-root broker.
        assert_eq!(usage(100, 40, 35, GB), (60 * GB, 95 * GB));
        // Nothing reserved: the plain ratio.
        assert_eq!(usage(100, 40, 40, GB), (60 * GB, 100 * GB));
        // Counts that disagree (a racing statvfs) never overflow or underflow.
        assert_eq!(usage(10, 20, 30, GB), (0, 30 * GB));
    }
}
