//! The data directory's lock: one broker per `data_dir`, and what a failed start created.
//!
//! Two brokers on one data directory both append at the same log positions and acknowledge the
//! same offsets; after a restart one's data is gone. [`DataDirLock::acquire`] takes an exclusive
//! `flock` on `<data_dir>/LOCK` (main thread, before anything else touches the directory) and
//! writes the holder's pid into it, so a second broker refuses to start with a message naming
//! that pid. The kernel drops the lock when the process ends, however it ends (kill -9
//! included), so a stale LOCK file never blocks a restart; the pid in it is only a hint.
//!
//! [`StartFootprint`] records, under the lock, which of the broker's paths did not exist yet,
//! so a start that fails before serving removes exactly what it created (a fresh shard
//! directory holds a preallocated 1 GiB segment) and never anything that was there before.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::config::shard_dir;

pub const LOCK_FILE_NAME: &str = "LOCK";

/// Held for the broker's life; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    /// The kernel holds the flock as long as this descriptor is open.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Locks `<data_dir>/LOCK` (creating it) or says which process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, String> {
        let path = data_dir.join(LOCK_FILE_NAME);
        // A holder may remove the file (a failed start cleaning up) between our open and our
        // flock; we would then hold a lock on a file nobody else sees. Retry on a fresh open
        // until the locked file is the one at `path` (bounded: each retry needs such a race).
        for _ in 0..16 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(format!("cannot lock {}: {e}", path.display()));
                }
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "a process that has not written its pid yet".to_owned(),
                };
                return Err(format!(
                    "data directory {} is in use by another broker ({holder} holds {}); stop \
                     it, or give this broker another data_dir (--data-dir)",
                    data_dir.display(),
                    path.display()
                ));
            }
            let same_file = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
                _ => false,
            };
            if !same_file {
                continue;
            }
            let pid = format!("{}\n", std::process::id());
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(pid.as_bytes()))
                .map_err(|e| format!("cannot write the lock file {}: {e}", path.display()))?;
            return Ok(DataDirLock { _file: file, path });
        }
        Err(format!("cannot lock {}: it keeps being replaced", path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Which of the broker's paths a start created (recorded while holding the lock).
#[derive(Debug)]
pub struct StartFootprint {
    data_dir: Option<PathBuf>,
    lock_file: bool,
    shard_dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl StartFootprint {
    /// Records what does not exist yet: call with `data_dir_existed` as seen before the lock
    /// created the directory, and `lock_file_existed` as seen before the lock created its file.
    /// `files` names the files a start writes at the top of the data directory (the producer
    /// id boot counter).
    pub fn record(
        data_dir: &Path,
        data_dir_existed: bool,
        lock_file_existed: bool,
        shards: usize,
        files: &[&str],
    ) -> StartFootprint {
        StartFootprint {
            data_dir: (!data_dir_existed).then(|| data_dir.to_path_buf()),
            lock_file: !lock_file_existed,
            shard_dirs: (0..shards)
                .map(|s| shard_dir(data_dir, s))
                .filter(|d| std::fs::symlink_metadata(d).is_err())
                .collect(),
            files: files
                .iter()
                .map(|f| data_dir.join(f))
                .filter(|f| std::fs::symlink_metadata(f).is_err())
                .collect(),
        }
    }

    /// Removes what the failed start created. Call with the lock still held and every shard
    /// stopped: the shard directories then hold only what this start wrote (never served).
    pub fn remove(self, lock: &DataDirLock) {
        for d in &self.shard_dirs {
            if let Err(e) = std::fs::remove_dir_all(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {} after the failed start: {e}", d.display());
                }
            }
        }
        for f in &self.files {
            if let Err(e) = std::fs::remove_file(f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {} after the failed start: {e}", f.display());
                }
            }
        }
        if self.lock_file {
            let _ = std::fs::remove_file(lock.path());
        }
        if let Some(d) = &self.data_dir {
            // Not recursive: anything else in it was put there by someone else.
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE_NAME)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts like another process would.
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn the_footprint_removes_only_what_did_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(shard_dir(&data, 1)).unwrap();
        std::fs::write(shard_dir(&data, 1).join("old.log"), b"x").unwrap();
        let lock = DataDirLock::acquire(&data).unwrap();
        let footprint = StartFootprint::record(&data, true, false, 2, &[]);
        std::fs::create_dir_all(shard_dir(&data, 0)).unwrap();
        std::fs::write(shard_dir(&data, 0).join("new.log"), b"y").unwrap();
        footprint.remove(&lock);
        assert!(!shard_dir(&data, 0).exists());
        assert!(shard_dir(&data, 1).join("old.log").exists());
        assert!(!data.join(LOCK_FILE_NAME).exists());
        assert!(data.exists(), "the data dir existed before");
    }
}
