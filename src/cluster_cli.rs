//! `ringmq cluster promote`: makes a replica broker the master of its group, live
//! (REPLICA_PROMOTE; docs/design.md "Replication", docs/protocol.md).

use clap::Subcommand;
use ringmq::client::Client;

use super::err;

#[derive(Subcommand)]
pub enum ClusterAction {
    /// Makes the replica broker --broker the master of its group, live, on every shard: it
    /// stops following, begins a new epoch and takes writes. Refused on a master, and while
    /// the old master still answers (stop it first, or --force). The role survives restarts
    /// (data_dir/replication-role.json); see docs/design.md "Replication".
    Promote {
        /// The new master's replicas, ip:port each, comma-separated (the old master's address
        /// too if it is to rejoin as a replica).
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<String>,
        /// sync or async.
        #[arg(long, default_value = "sync", value_parser = ["sync", "async"])]
        replication: String,
        /// Members of the in-sync set, the master included, a sync send needs.
        #[arg(long, default_value_t = 2)]
        min_in_sync_replicas: u32,
        /// Promote even though the old master still answers (only when it is fenced some
        /// other way: two masters taking writes lose acknowledged messages).
        #[arg(long)]
        force: bool,
        /// How long to wait for the promotion (each shard rebuilds its state from its log).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        timeout: std::time::Duration,
    },
}

pub fn run(broker: &str, action: ClusterAction) -> Result<(), String> {
    use ringmq::replication::config::Mode;
    match action {
        ClusterAction::Promote { replicas, replication, min_in_sync_replicas, force, timeout } => {
            let mode = if replication == "async" { Mode::Async } else { Mode::Sync };
            let admin = Client::connect(broker).map_err(err)?.admin();
            let shards =
                admin.promote(replicas, mode, min_in_sync_replicas, force, timeout).map_err(err)?;
            for s in shards {
                println!("shard={}\tepoch={}\tstart={}", s.shard, s.epoch, s.start);
            }
            println!("{broker} is the master; restarts keep it master (replication-role.json)");
        }
    }
    Ok(())
}
