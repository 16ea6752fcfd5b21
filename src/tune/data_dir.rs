//! Facts about the broker's data directory: its filesystem (statfs), whether O_DIRECT works
//! there (by trying it), whether an ext4 filesystem has a journal (its sysfs directory), and
//! the disks behind it ([`super::block_device`]).
//!
//! The directory is a real path even when /proc and /sys come from a fake [`Root`]: stat,
//! statfs and the O_DIRECT probe are system calls on it. A data directory that does not exist
//! yet (the broker creates it) is judged by its nearest existing ancestor, which is on the same
//! filesystem unless a mount point is created in between. The probe writes one 4 KiB temporary
//! file there and removes it; this is the only write `tune check` makes.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::block_device::{backing_devices, split_dev, BlockDevice};
use super::facts::{read_text, Fact, Root};

#[derive(Debug, Clone)]
pub struct DataDirFacts {
    /// The configured data directory.
    pub dir: PathBuf,
    /// The directory actually examined: `dir`, or its nearest existing ancestor.
    pub probed: Fact<PathBuf>,
    pub filesystem: Fact<Filesystem>,
    pub o_direct: Fact<ODirect>,
    /// (major, minor) of the filesystem's device.
    pub device_number: Fact<(u64, u64)>,
    /// Whether the filesystem has a journal, if it is ext4 (see [`ext4_journal`]).
    pub ext4_journal: Fact<bool>,
    pub devices: Fact<Vec<BlockDevice>>,
    /// (used, total) bytes of the filesystem, as retention counts them (`df`'s way).
    pub disk_usage: Fact<(u64, u64)>,
}

/// A filesystem type from statfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filesystem {
    pub magic: u32,
}

impl Filesystem {
    /// The kernel's name for this magic number, if it is one ringmq knows.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self.magic {
            0xEF53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x0102_1994 => "tmpfs",
            0x8584_58F6 => "ramfs",
            0x794C_7630 => "overlayfs",
            0x6969 => "nfs",
            0x2FC1_2FC1 => "zfs",
            0xF2F5_2010 => "f2fs",
            0x6573_5546 => "fuse",
            0xFF53_4D42 => "cifs",
            0x00C3_6400 => "ceph",
            0x0102_1997 => "9p",
            0x6165_6673 => "anonymous",
            _ => return None,
        })
    }

    pub fn describe(&self) -> String {
        match self.name() {
            Some(n) => n.to_string(),
            None => format!("unknown (statfs magic {:#x})", self.magic),
        }
    }
}

/// The outcome of trying O_DIRECT in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ODirect {
    Works,
    /// The filesystem refused O_DIRECT (open or an aligned write failed with EINVAL).
    Unsupported(String),
}

impl DataDirFacts {
    pub fn collect(root: &Root, dir: &Path) -> DataDirFacts {
        let probed = nearest_existing(dir);
        let device_number = probed.clone().and_then(|p| {
            let meta = std::fs::metadata(&p).map_err(|e| format!("stat {}: {e}", p.display()))?;
            Ok(split_dev(meta.dev()))
        });
        DataDirFacts {
            dir: dir.to_path_buf(),
            filesystem: probed
                .clone()
                .and_then(|p| statfs_magic(&p))
                .map(|magic| Filesystem { magic }),
            o_direct: probed.clone().and_then(|p| probe_o_direct(&p)),
            devices: device_number
                .clone()
                .and_then(|(major, minor)| backing_devices(root, major, minor)),
            ext4_journal: device_number.clone().and_then(|dev| ext4_journal(root, dev)),
            disk_usage: probed.clone().and_then(|p| {
                crate::storage::dma_dir::statvfs_usage(&p)
                    .map_err(|e| format!("statvfs {}: {e}", p.display()))
            }),
            device_number,
            probed,
        }
    }
}

/// Whether the ext4 filesystem on device `major:minor` has a journal. ext4 names each mounted
/// filesystem's sysfs directory after its device (`/sys/fs/ext4/vda1`, `dm-0`), and its
/// `journal_task` holds the journal thread's pid, or `<none>` when it has no journal.
pub fn ext4_journal(root: &Root, (major, minor): (u64, u64)) -> Fact<bool> {
    let link = root.path(&format!("/sys/dev/block/{major}:{minor}"));
    let device = std::fs::canonicalize(&link).map_err(|e| format!("{}: {e}", link.display()))?;
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} names no device", device.display()))?;
    let task = read_text(&root.path(&format!("/sys/fs/ext4/{name}/journal_task")))?;
    Ok(task.trim() != "<none>")
}

/// `dir` or its nearest existing ancestor.
fn nearest_existing(dir: &Path) -> Fact<PathBuf> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| format!("current directory: {e}"))?.join(dir)
    };
    absolute
        .ancestors()
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no existing directory above {}", dir.display()))
}

fn statfs_magic(dir: &Path) -> Fact<u32> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", dir.display()))?;
    // SAFETY: statfs only writes the struct we pass; c_path is NUL-terminated and outlives the call.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    if rc != 0 {
        return Err(format!("statfs {}: {}", dir.display(), std::io::Error::last_os_error()));
    }
    // The magic numbers are 32-bit; f_type's width differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    Ok(buf.f_type as u32)
}

/// Opens a new file in `dir` with O_DIRECT and writes one aligned 4 KiB block, then removes it.
fn probe_o_direct(dir: &Path) -> Fact<ODirect> {
    const BLOCK: usize = 4096;
    let path = dir.join(format!(".ringmq-tune-odirect-{}", std::process::id()));
    let result = (|| {
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(ODirect::Unsupported(format!("open(O_DIRECT) failed: {e}")))
            }
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        };
        // O_DIRECT needs a block-aligned buffer: take an aligned window of a larger one.
        let storage = vec![0u8; 2 * BLOCK];
        let start = storage.as_ptr().align_offset(BLOCK);
        match file.write(&storage[start..start + BLOCK]) {
            Ok(BLOCK) => Ok(ODirect::Works),
            Ok(n) => Err(format!("an O_DIRECT write of {BLOCK} bytes wrote {n}")),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Ok(ODirect::Unsupported(format!("an aligned O_DIRECT write failed: {e}")))
            }
            Err(e) => Err(format!("an O_DIRECT write to {} failed: {e}", path.display())),
        }
    })();
    // The file may not exist if open failed; any other failure to remove it is worth saying.
    match std::fs::remove_file(&path) {
        Ok(()) => result,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => result,
        Err(e) => Err(format!("could not remove the probe file {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_data_dir_is_judged_by_its_existing_parent_and_the_probe_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("not/yet/created");
        let facts = DataDirFacts::collect(&Root::new(t.path()), &dir);
        assert_eq!(facts.probed.as_deref(), Ok(t.path()));
        let fs = facts.filesystem.unwrap();
        assert!(fs.magic != 0);
        // Whatever the answer, it is an answer (works or unsupported), and no file is left.
        assert!(facts.o_direct.is_ok(), "{:?}", facts.o_direct);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
        // The fake root has no /sys/dev/block: the disk is unknown, with the reason.
        assert!(facts.devices.is_err());
        assert!(!dir.exists(), "check must not create the data directory");
    }

    #[test]
    fn known_filesystems_have_names() {
        assert_eq!(Filesystem { magic: 0x5846_5342 }.describe(), "xfs");
        assert_eq!(Filesystem { magic: 0x1234 }.describe(), "unknown (statfs magic 0x1234)");
    }
}
