//! The tuning profiles: `throughput`, `latency`, `durability`.
//!
//! A profile is two files in tuning/: `<name>.toml`, an ordinary broker config (run it with
//! `ringmq broker --config tuning/<name>.toml`; keys it omits keep their defaults), and
//! `<name>.os.toml`, the OS settings `ringmq tune apply --profile <name>` writes. They are two
//! files because the broker refuses unknown keys in its config, so an `[os]` table there would
//! stop it. Both are compiled into the binary, so `tune apply` works without the source tree.

use serde::Deserialize;

use crate::broker::Config;

/// OS settings a profile applies; a missing key leaves that setting alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OsSettings {
    pub swappiness: Option<u64>,
    pub dirty_background_ratio: Option<u64>,
    pub dirty_ratio: Option<u64>,
    pub dirty_expire_centisecs: Option<u64>,
    pub dirty_writeback_centisecs: Option<u64>,
    /// /sys/kernel/mm/transparent_hugepage/enabled: "always", "madvise" or "never".
    pub transparent_hugepage: Option<String>,
    /// /sys/kernel/mm/transparent_hugepage/defrag.
    pub transparent_hugepage_defrag: Option<String>,
    /// I/O scheduler for the data directory's disks when they are flash (rotational = 0).
    pub io_scheduler_flash: Option<String>,
    /// I/O scheduler for the data directory's disks when they spin.
    pub io_scheduler_rotational: Option<String>,
    /// scaling_governor written to every online CPU that has cpufreq.
    pub cpu_governor: Option<String>,
    /// KVM guests with the haltpoll cpuidle governor: how long an idle vCPU polls before it
    /// halts (/sys/module/haltpoll/parameters/guest_halt_poll_ns). Elsewhere there is nothing
    /// to set, and `apply` says so.
    pub guest_halt_poll_ns: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OsFile {
    os: OsSettings,
}

/// A profile: its broker config and its OS settings.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    pub config: Config,
    pub os: OsSettings,
}

/// (name, broker config text, OS settings text) of every profile.
pub const PROFILES: [(&str, &str, &str); 3] = [
    (
        "throughput",
        include_str!("../../tuning/throughput.toml"),
        include_str!("../../tuning/throughput.os.toml"),
    ),
    (
        "latency",
        include_str!("../../tuning/latency.toml"),
        include_str!("../../tuning/latency.os.toml"),
    ),
    (
        "durability",
        include_str!("../../tuning/durability.toml"),
        include_str!("../../tuning/durability.os.toml"),
    ),
];

pub fn names() -> Vec<&'static str> {
    PROFILES.iter().map(|(n, _, _)| *n).collect()
}

/// The profile called `name`, parsed and validated.
pub fn load(name: &str) -> Result<Profile, String> {
    let (name, config_text, os_text) =
        PROFILES.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
            format!("unknown profile {name:?}; the profiles are {}", names().join(", "))
        })?;
    let config = Config::parse(config_text).map_err(|e| format!("tuning/{name}.toml: {e}"))?;
    config.validate().map_err(|e| format!("tuning/{name}.toml: {e}"))?;
    let os = parse_os(os_text).map_err(|e| format!("tuning/{name}.os.toml: {e}"))?;
    Ok(Profile { name, config, os })
}

pub fn parse_os(text: &str) -> Result<OsSettings, String> {
    toml::from_str::<OsFile>(text).map(|f| f.os).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FlushMode;

    #[test]
    fn every_profile_is_a_valid_broker_config_with_os_settings() {
        for name in names() {
            let p = load(name).unwrap_or_else(|e| panic!("{e}"));
            // The same text the broker reads with --config.
            let path = format!("{}/tuning/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            let from_disk = Config::load(std::path::Path::new(&path)).unwrap();
            assert_eq!(from_disk, p.config);
            assert_ne!(p.os, OsSettings::default(), "{name} sets no OS setting");
        }
        assert_eq!(load("durability").unwrap().config.storage.flush_mode, FlushMode::Sync);
        assert!(load("fast").unwrap_err().contains("throughput, latency, durability"));
    }

    #[test]
    fn os_files_refuse_unknown_keys() {
        assert!(parse_os("[os]\nswapiness = 1\n").unwrap_err().contains("swapiness"));
        assert!(parse_os("swappiness = 1\n").is_err());
        assert_eq!(parse_os("[os]\nswappiness = 1\n").unwrap().swappiness, Some(1));
    }
}
