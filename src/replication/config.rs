//! The `[replication]` section of the broker config: this broker's role, the replication mode
//! and the in-sync rules' settings. No section means a single broker (no replication at all).
//!
//! Pure: parsing is serde's, [`ReplicationConfig::validate`] checks the knobs against each
//! other and names the one to fix.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::in_sync::InSyncConfig;

/// Whether this broker is the master of its group or a replica of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
}

/// When a master acknowledges a produce (RocketMQ's SYNC_MASTER / ASYNC_MASTER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Once every member of the in-sync set has synced the batch (FLUSH_SLAVE_TIMEOUT past
    /// `sync_replication_timeout_ms`; SLAVE_NOT_AVAILABLE, before writing, when the set has
    /// fewer than `min_in_sync_replicas` members).
    Sync,
    /// Once the batch is durable on the master (per `storage.flush_mode`); replicas follow
    /// behind, and what they have not synced is what a failover can lose.
    Async,
}

/// The `[replication]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// `master` or `replica`. Required.
    pub role: Option<Role>,
    /// `sync` or `async` (master only). Default `sync`.
    pub replication: Mode,
    /// Master only: each replica's address as `ip:port` (its shared port, the address it
    /// joins from). A replica not listed is refused. Required on a master, at least one.
    pub replicas: Vec<String>,
    /// Replica only: the master's shared port as `ip:port`. Required on a replica.
    pub master: Option<String>,
    /// Replica only: the address this replica presents to its master, as listed in the
    /// master's `replicas`. Default: the IP its connection to the master comes from, and
    /// its own shared port.
    pub advertise: Option<String>,
    /// Members of a shard's in-sync set, the master included, a sync produce needs to be
    /// accepted and acknowledged. Default 2. At most 1 + the number of replicas.
    pub min_in_sync_replicas: usize,
    /// A sync produce not confirmed by the in-sync set within this long is answered
    /// FLUSH_SLAVE_TIMEOUT (it stays stored). Default 3000.
    pub sync_replication_timeout_ms: u64,
    /// A replica further behind than this (it has not synced what the master had this long
    /// ago) leaves the in-sync set (it rejoins once caught up). Default 5000.
    pub replica_lag_max_ms: u64,
    /// Bytes of log one replication fetch carries at most (one fetch in flight per replica
    /// shard, so this bounds the memory replication uses on both sides). Default 4 MiB; at
    /// least `storage.max_batch_bytes`, at most `broker.max_fetch_bytes`.
    pub fetch_bytes: usize,
    /// Sync produces one master shard holds waiting for the in-sync set; past it a produce is
    /// answered FLUSH_SLAVE_TIMEOUT at once (stored, not confirmed). Default 65536.
    pub max_sync_waiters: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            role: None,
            replication: Mode::Sync,
            replicas: Vec::new(),
            master: None,
            advertise: None,
            min_in_sync_replicas: 2,
            sync_replication_timeout_ms: 3000,
            replica_lag_max_ms: 5000,
            fetch_bytes: 4 << 20,
            max_sync_waiters: 65_536,
        }
    }
}

/// The most replicas one master serves.
pub const MAX_REPLICAS: usize = 16;

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|e| {
        format!(
            "replication.{key} = {text:?} is not an ip:port address ({e}), e.g. \"10.0.0.2:10911\""
        )
    })
}

impl ReplicationConfig {
    /// The role (validated configs always have one).
    pub fn role(&self) -> Role {
        self.role.unwrap_or(Role::Master)
    }

    /// The replicas' addresses (master).
    pub fn replica_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().filter_map(|r| r.parse().ok()).collect()
    }

    /// The master's address (replica).
    pub fn master_addr(&self) -> Option<SocketAddr> {
        self.master.as_deref().and_then(|m| m.parse().ok())
    }

    pub fn advertise_addr(&self) -> Option<SocketAddr> {
        self.advertise.as_deref().and_then(|m| m.parse().ok())
    }

    pub fn sync_timeout(&self) -> Duration {
        Duration::from_millis(self.sync_replication_timeout_ms)
    }

    /// The in-sync rules' settings.
    pub fn in_sync(&self) -> InSyncConfig {
        InSyncConfig {
            min_in_sync_replicas: self.min_in_sync_replicas,
            replica_lag_max: Duration::from_millis(self.replica_lag_max_ms),
        }
    }

    /// Checks the section; `max_batch_bytes` and `max_fetch_bytes` bound `fetch_bytes`.
    pub fn validate(&self, max_batch_bytes: usize, max_fetch_bytes: usize) -> Result<(), String> {
        let role = self.role.ok_or(
            "replication.role is required in a [replication] section: \"master\" or \"replica\" \
             (leave the section out for a single broker)",
        )?;
        match role {
            Role::Master => {
                if self.replicas.is_empty() {
                    return Err("replication.replicas must list at least one replica address \
                                on a master"
                        .into());
                }
                if self.replicas.len() > MAX_REPLICAS {
                    return Err(format!(
                        "replication.replicas lists {} replicas, at most {MAX_REPLICAS}",
                        self.replicas.len()
                    ));
                }
                let mut seen = Vec::new();
                for r in &self.replicas {
                    let a = parse_addr("replicas", r)?;
                    if seen.contains(&a) {
                        return Err(format!("replication.replicas lists {a} twice"));
                    }
                    seen.push(a);
                }
                if self.master.is_some() || self.advertise.is_some() {
                    return Err("replication.master and replication.advertise are for a replica; \
                                a master lists its replicas"
                        .into());
                }
                let most = 1 + self.replicas.len();
                if self.min_in_sync_replicas == 0 || self.min_in_sync_replicas > most {
                    return Err(format!(
                        "replication.min_in_sync_replicas = {} must be in 1..={most} (the master \
                         counts, plus {} replicas)",
                        self.min_in_sync_replicas,
                        self.replicas.len()
                    ));
                }
            }
            Role::Replica => {
                let master = self
                    .master
                    .as_deref()
                    .ok_or("replication.master (the master's ip:port) is required on a replica")?;
                parse_addr("master", master)?;
                if let Some(a) = &self.advertise {
                    parse_addr("advertise", a)?;
                }
                if !self.replicas.is_empty() {
                    return Err("replication.replicas is for a master; a replica names its \
                                master with replication.master"
                        .into());
                }
            }
        }
        for (name, v) in [
            ("sync_replication_timeout_ms", self.sync_replication_timeout_ms),
            ("replica_lag_max_ms", self.replica_lag_max_ms),
            ("max_sync_waiters", self.max_sync_waiters as u64),
        ] {
            if v == 0 {
                return Err(format!("replication.{name} must be positive"));
            }
        }
        if self.fetch_bytes < max_batch_bytes || self.fetch_bytes > max_fetch_bytes {
            return Err(format!(
                "replication.fetch_bytes = {} must be in storage.max_batch_bytes ..= \
                 broker.max_fetch_bytes ({max_batch_bytes} ..= {max_fetch_bytes}): a replication \
                 fetch carries at least one whole batch in one frame",
                self.fetch_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ReplicationConfig, String> {
        let c: ReplicationConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate(1 << 20, 8 << 20).map(|()| c)
    }

    #[test]
    fn a_master_and_a_replica_parse_with_defaults() {
        let m = parse("role = \"master\"\nreplicas = [\"127.0.0.1:20911\", \"127.0.0.1:30911\"]\n")
            .unwrap();
        assert_eq!(m.role(), Role::Master);
        assert_eq!(m.replication, Mode::Sync);
        assert_eq!(m.min_in_sync_replicas, 2);
        assert_eq!(m.replica_addrs().len(), 2);
        let r = parse("role = \"replica\"\nmaster = \"127.0.0.1:10911\"\n").unwrap();
        assert_eq!(r.role(), Role::Replica);
        assert_eq!(r.master_addr(), Some("127.0.0.1:10911".parse().unwrap()));
        let a = parse("role = \"master\"\nreplication = \"async\"\nreplicas = [\"[::1]:1\"]\n")
            .unwrap();
        assert_eq!(a.replication, Mode::Async);
    }

    #[test]
    fn bad_sections_name_the_knob() {
        let err = |text: &str| parse(text).unwrap_err();
        assert!(err("replicas = [\"127.0.0.1:1\"]\n").contains("replication.role"));
        assert!(err("role = \"leader\"\n").contains("leader"));
        assert!(err("role = \"master\"\n").contains("replication.replicas"));
        assert!(err("role = \"master\"\nreplicas = [\"host:1\"]\n").contains("ip:port"));
        assert!(err("role = \"master\"\nreplicas = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n")
            .contains("twice"));
        assert!(err("role = \"master\"\nreplicas = [\"127.0.0.1:1\"]\nmin_in_sync_replicas = 3\n")
            .contains("min_in_sync_replicas"));
        assert!(err("role = \"replica\"\n").contains("replication.master"));
        assert!(err(
            "role = \"replica\"\nmaster = \"127.0.0.1:1\"\nreplicas = [\"127.0.0.1:2\"]\n"
        )
        .contains("replication.replicas is for a master"));
        assert!(err("role = \"master\"\nreplicas = [\"127.0.0.1:1\"]\nmaster = \"127.0.0.1:2\"\n")
            .contains("for a replica"));
        assert!(err("role = \"replica\"\nmaster = \"127.0.0.1:1\"\nreplica_lag_max_ms = 0\n")
            .contains("replica_lag_max_ms"));
        assert!(err("role = \"replica\"\nmaster = \"127.0.0.1:1\"\nfetch_bytes = 10\n")
            .contains("fetch_bytes"));
        assert!(err("role = \"replica\"\nmaster = \"127.0.0.1:1\"\nbogus = 1\n").contains("bogus"));
    }
}
