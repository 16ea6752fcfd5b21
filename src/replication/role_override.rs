//! The role a `ringmq cluster promote` gave a replica broker, kept in an fsynced file in its
//! data directory (`replication-role.json`) so that a restart keeps it master instead of
//! following its old master again (which would truncate data the promoted broker
//! acknowledged).
//!
//! The promotion writes the file (temporary file, fsync, rename, directory fsync) before any
//! shard stops following. At start, a broker whose config says `role = "replica"` and whose
//! data directory holds the file runs as the master the file describes; a config that says
//! `role = "master"` wins (the operator updated it). To make a promoted broker a replica
//! again, the operator deletes the file. Parsing and [`effective`] are pure;
//! [`apply_role_override`] reads the file at start.

use serde::{Deserialize, Serialize};

use super::config::{Mode, ReplicationConfig, Role};

/// The file's name in the data directory.
pub const ROLE_OVERRIDE_FILE: &str = "replication-role.json";

/// What a promotion made this broker: a master with these replicas and mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleOverride {
    pub role: Role,
    pub replication: Mode,
    pub replicas: Vec<String>,
    pub min_in_sync_replicas: usize,
    /// The master this broker followed before the promotion (for the operator).
    pub promoted_from: Option<String>,
    /// When the promotion happened, Unix milliseconds (for the operator).
    pub promoted_at_ms: i64,
}

impl RoleOverride {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a role override serializes");
        v.push(b'\n');
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<RoleOverride, String> {
        let o: RoleOverride = serde_json::from_slice(bytes)
            .map_err(|e| format!("{ROLE_OVERRIDE_FILE} does not parse: {e}"))?;
        if o.role != Role::Master {
            return Err(format!("{ROLE_OVERRIDE_FILE} names role {:?}; only master", o.role));
        }
        Ok(o)
    }

    /// The `[replication]` section a master with this override runs with: the replicas, mode
    /// and `min_in_sync_replicas` of the override, every other knob from `base`. Checked like
    /// a config section (`max_batch_bytes`, `max_fetch_bytes` bound `fetch_bytes`).
    pub fn apply(
        &self,
        base: &ReplicationConfig,
        max_batch_bytes: usize,
        max_fetch_bytes: usize,
    ) -> Result<ReplicationConfig, String> {
        let c = ReplicationConfig {
            role: Some(Role::Master),
            replication: self.replication,
            replicas: self.replicas.clone(),
            master: None,
            advertise: None,
            min_in_sync_replicas: self.min_in_sync_replicas,
            ..base.clone()
        };
        c.validate(max_batch_bytes, max_fetch_bytes)?;
        Ok(c)
    }
}

/// The section a broker starts with, given its configured one and the override file's
/// content (None: no file). A configured master ignores the file; a configured replica with
/// the file runs as the master the file describes. The bool says the file was applied.
pub fn effective(
    configured: &ReplicationConfig,
    file: Option<&[u8]>,
    max_batch_bytes: usize,
    max_fetch_bytes: usize,
) -> Result<(ReplicationConfig, bool), String> {
    match (configured.role(), file) {
        (Role::Replica, Some(bytes)) => {
            let o = RoleOverride::decode(bytes)?;
            let c = o.apply(configured, max_batch_bytes, max_fetch_bytes).map_err(|e| {
                format!("{ROLE_OVERRIDE_FILE} (written by `ringmq cluster promote`): {e}")
            })?;
            Ok((c, true))
        }
        _ => Ok((configured.clone(), false)),
    }
}

/// At start (main thread, data directory locked): a replica broker that `ringmq cluster
/// promote` made master runs as master after a restart too. Reads the file in the config's
/// `data_dir`; replaces the `[replication]` section with the effective one.
pub fn apply_role_override(config: &mut crate::broker::Config) -> Result<(), String> {
    let Some(configured) = &config.replication else { return Ok(()) };
    let path = config.broker.data_dir.join(ROLE_OVERRIDE_FILE);
    let file = match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let (max_batch, max_fetch) = (config.storage.max_batch_bytes, config.broker.max_fetch_bytes);
    let (section, applied) = effective(configured, file.as_deref(), max_batch, max_fetch)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if applied {
        tracing::warn!(
            replicas = ?section.replicas,
            mode = ?section.replication,
            "this broker was promoted to master ({}): it runs as master although its config \
             says role = \"replica\"; set role = \"master\" and replicas in the config, then \
             delete the file",
            path.display()
        );
    } else if file.is_some() {
        tracing::info!(
            "{} is left from a promotion; the config says role = \"master\", so it is not \
             used (delete it)",
            path.display()
        );
    }
    config.replication = Some(section);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica() -> ReplicationConfig {
        ReplicationConfig {
            role: Some(Role::Replica),
            master: Some("127.0.0.1:10911".into()),
            replica_lag_max_ms: 1234,
            ..ReplicationConfig::default()
        }
    }

    fn promoted() -> RoleOverride {
        RoleOverride {
            role: Role::Master,
            replication: Mode::Async,
            replicas: vec!["127.0.0.1:30911".into(), "127.0.0.1:10911".into()],
            min_in_sync_replicas: 1,
            promoted_from: Some("127.0.0.1:10911".into()),
            promoted_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_promoted_replica_starts_as_the_master_the_file_names() {
        let bytes = promoted().encode();
        assert_eq!(RoleOverride::decode(&bytes).unwrap(), promoted());
        let (c, applied) = effective(&replica(), Some(&bytes), 1 << 20, 8 << 20).unwrap();
        assert!(applied);
        assert_eq!(c.role(), Role::Master);
        assert_eq!(c.replication, Mode::Async);
        assert_eq!(c.replica_addrs().len(), 2);
        assert_eq!(c.min_in_sync_replicas, 1);
        assert_eq!(c.master, None);
        assert_eq!(c.replica_lag_max_ms, 1234, "other knobs come from the config");
    }

    #[test]
    fn a_configured_master_or_no_file_keeps_the_config() {
        let (c, applied) = effective(&replica(), None, 1 << 20, 8 << 20).unwrap();
        assert!(!applied);
        assert_eq!(c, replica());
        let master = ReplicationConfig {
            role: Some(Role::Master),
            replicas: vec!["127.0.0.1:1".into()],
            ..ReplicationConfig::default()
        };
        let (c, applied) =
            effective(&master, Some(&promoted().encode()), 1 << 20, 8 << 20).unwrap();
        assert!(!applied);
        assert_eq!(c, master);
    }

    #[test]
    fn a_bad_file_is_a_clear_error() {
        let err = |b: &[u8]| effective(&replica(), Some(b), 1 << 20, 8 << 20).unwrap_err();
        assert!(err(b"{").contains(ROLE_OVERRIDE_FILE));
        let mut o = promoted();
        o.replicas.clear();
        assert!(err(&o.encode()).contains("replication.replicas"));
        let mut o = promoted();
        o.min_in_sync_replicas = 9;
        assert!(err(&o.encode()).contains("min_in_sync_replicas"));
        let text = String::from_utf8(promoted().encode()).unwrap().replace("master", "replica");
        assert!(err(text.as_bytes()).contains("only master"));
    }
}
