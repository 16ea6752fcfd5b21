//! Which disks back a directory: st_dev -> /sys/dev/block/MAJ:MIN -> the disks whose queue
//! settings (I/O scheduler, write cache) govern the commit log's writes.
//!
//! A filesystem sits on a partition (`sda1`: the queue belongs to the parent disk `sda`), on a
//! whole disk, or on a virtual device: device-mapper (LVM, dm-crypt) and md RAID list the
//! devices under them in `slaves/`, and the scheduler that orders the writes is theirs, so
//! those are followed (a bounded number of levels). A loop device names its backing file.
//! Major 0 is an anonymous device (tmpfs, overlayfs, btrfs, NFS): no block device to tune.
//! All of it is read under a [`Root`], so tests build fake sysfs trees with relative symlinks
//! like the kernel's.

use std::path::{Path, PathBuf};

use super::facts::{parse_selection, read_text, Fact, Root, Selection};

/// One disk whose queue serves the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name: "nvme0n1", "sda", "vda".
    pub name: String,
    /// Its sysfs directory (under the root), where `queue/` lives.
    pub sys_dir: PathBuf,
    /// How the data directory reaches it: "partition nvme0n1p2", "dm-0 -> nvme0n1", ...
    pub via: Vec<String>,
    pub scheduler: Fact<Selection>,
    /// "write back" (volatile cache, fdatasync sends a flush) or "write through".
    pub write_cache: Fact<String>,
    pub rotational: Fact<bool>,
    /// For a loop device, the file it is backed by.
    pub backing_file: Option<String>,
}

impl BlockDevice {
    pub fn scheduler_path(&self) -> PathBuf {
        self.sys_dir.join("queue/scheduler")
    }
}

/// Splits a Linux `dev_t` (glibc's encoding) into (major, minor).
pub fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// Levels of stacked devices followed (dm on md on partitions is three).
const MAX_DEPTH: usize = 6;
/// Devices reported at most (a RAID of many disks lists the first ones).
const MAX_DEVICES: usize = 64;

/// The disks backing device `major:minor`.
pub fn backing_devices(root: &Root, major: u64, minor: u64) -> Fact<Vec<BlockDevice>> {
    if major == 0 {
        return Err(format!(
            "no block device: {major}:{minor} is an anonymous device (tmpfs, overlayfs, btrfs, \
             NFS or another filesystem without one disk)"
        ));
    }
    let link = root.path(&format!("/sys/dev/block/{major}:{minor}"));
    let dir = std::fs::canonicalize(&link)
        .map_err(|e| format!("cannot resolve {}: {e}", link.display()))?;
    let mut out = Vec::new();
    collect(&dir, Vec::new(), 0, &mut out)?;
    Ok(out)
}

fn collect(dir: &Path, via: Vec<String>, depth: usize, out: &mut Vec<BlockDevice>) -> Fact<()> {
    if depth > MAX_DEPTH {
        return Err(format!("more than {MAX_DEPTH} stacked devices under {}", dir.display()));
    }
    let name = file_name(dir);
    if dir.join("partition").exists() {
        let parent = dir.parent().ok_or_else(|| format!("partition {name} has no parent"))?;
        let mut via = via;
        via.push(format!("partition {name}"));
        return collect(parent, via, depth + 1, out);
    }
    let slaves = list_dir(&dir.join("slaves"));
    if !slaves.is_empty() {
        for slave in slaves {
            if out.len() >= MAX_DEVICES {
                break;
            }
            let target = std::fs::canonicalize(&slave)
                .map_err(|e| format!("cannot resolve {}: {e}", slave.display()))?;
            let mut via = via.clone();
            via.push(format!("{name} -> {}", file_name(&target)));
            collect(&target, via, depth + 1, out)?;
        }
        return Ok(());
    }
    out.push(read_device(dir, name, via));
    Ok(())
}

fn read_device(dir: &Path, name: String, via: Vec<String>) -> BlockDevice {
    let queue = dir.join("queue");
    let backing_file = read_text(&dir.join("loop/backing_file")).ok();
    BlockDevice {
        scheduler: read_text(&queue.join("scheduler")).and_then(|t| parse_selection(&t)),
        write_cache: read_text(&queue.join("write_cache")),
        rotational: read_text(&queue.join("rotational")).and_then(|t| match t.as_str() {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("queue/rotational of {name} holds {t:?}")),
        }),
        name,
        sys_dir: dir.to_path_buf(),
        via,
        backing_file,
    }
}

fn file_name(dir: &Path) -> String {
    dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into())
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Adds a disk `devices/<path>/<name>` with queue files, and its dev link.
    pub(crate) fn fake_disk(root: &Path, path: &str, name: &str, dev: &str, scheduler: &str) {
        let dir = root.join("sys/devices").join(path).join(name);
        std::fs::create_dir_all(dir.join("queue")).unwrap();
        std::fs::write(dir.join("queue/scheduler"), format!("{scheduler}\n")).unwrap();
        std::fs::write(dir.join("queue/write_cache"), "write back\n").unwrap();
        std::fs::write(dir.join("queue/rotational"), "0\n").unwrap();
        link_dev(root, dev, &format!("{path}/{name}"));
    }

    /// /sys/dev/block/<dev> -> ../../devices/<target>, relative like the kernel's.
    pub(crate) fn link_dev(root: &Path, dev: &str, target: &str) {
        let links = root.join("sys/dev/block");
        std::fs::create_dir_all(&links).unwrap();
        symlink(format!("../../devices/{target}"), links.join(dev)).unwrap();
    }

    #[test]
    fn dev_numbers_split_like_glibc() {
        assert_eq!(split_dev(0xfe00), (254, 0));
        // makedev(259, 256): the minor's high bits sit above the major's low ones.
        assert_eq!(split_dev(0x110300), (259, 256));
        assert_eq!(split_dev((259 << 8) | 5), (259, 5));
        assert_eq!(split_dev(0x2d), (0, 45));
    }

    #[test]
    fn a_partition_resolves_to_its_disk() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        fake_disk(t.path(), "pci0/nvme/nvme0", "nvme0n1", "259:0", "[none] mq-deadline kyber");
        let part = t.path().join("sys/devices/pci0/nvme/nvme0/nvme0n1/nvme0n1p2");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(part.join("partition"), "2\n").unwrap();
        link_dev(t.path(), "259:2", "pci0/nvme/nvme0/nvme0n1/nvme0n1p2");

        let devices = backing_devices(&root, 259, 2).unwrap();
        assert_eq!(devices.len(), 1);
        let d = &devices[0];
        assert_eq!(d.name, "nvme0n1");
        assert_eq!(d.via, ["partition nvme0n1p2"]);
        assert_eq!(d.scheduler.as_ref().unwrap().current, "none");
        assert_eq!(d.write_cache.as_deref(), Ok("write back"));
        assert_eq!(d.rotational, Ok(false));
        assert!(d.scheduler_path().starts_with(std::fs::canonicalize(t.path()).unwrap()));
    }

    #[test]
    fn device_mapper_follows_its_slaves() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        fake_disk(t.path(), "pci0", "sda", "8:0", "mq-deadline [bfq] none");
        fake_disk(t.path(), "pci1", "sdb", "8:16", "[mq-deadline] none");
        let dm = t.path().join("sys/devices/virtual/block/dm-0");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        std::fs::create_dir_all(dm.join("queue")).unwrap();
        std::fs::write(dm.join("queue/scheduler"), "none\n").unwrap();
        symlink("../../../../pci0/sda", dm.join("slaves/sda")).unwrap();
        symlink("../../../../pci1/sdb", dm.join("slaves/sdb")).unwrap();
        link_dev(t.path(), "253:0", "virtual/block/dm-0");

        let devices = backing_devices(&root, 253, 0).unwrap();
        let names: Vec<_> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "sdb"]);
        assert_eq!(devices[0].via, ["dm-0 -> sda"]);
        assert_eq!(devices[0].scheduler.as_ref().unwrap().current, "bfq");
    }

    #[test]
    fn anonymous_and_missing_devices_are_unknown_not_errors_that_crash() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        assert!(backing_devices(&root, 0, 45).unwrap_err().contains("anonymous"));
        assert!(backing_devices(&root, 8, 1).unwrap_err().contains("cannot resolve"));
        // A device without queue files: present, its queue facts unknown.
        let dir = t.path().join("sys/devices/virtual/block/loop0");
        std::fs::create_dir_all(dir.join("loop")).unwrap();
        std::fs::write(dir.join("loop/backing_file"), "/images/disk.img\n").unwrap();
        link_dev(t.path(), "7:0", "virtual/block/loop0");
        let d = &backing_devices(&root, 7, 0).unwrap()[0];
        assert_eq!(d.backing_file.as_deref(), Some("/images/disk.img"));
        assert!(d.scheduler.is_err() && d.write_cache.is_err() && d.rotational.is_err());
    }
}
