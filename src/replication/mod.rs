//! Master/replica replication (`../shared/DESIGN.md` section 7, docs/design.md).
//!
//! Shard s of a master streams its log bytes unchanged to shard s of each replica; replicas
//! acknowledge the position they have synced to disk. The rules that decide what is safe are
//! pure state machines here, tested without sockets or disks:
//!
//! - [`config`]: the `[replication]` section of the broker config.
//! - [`epochs`]: each shard's epoch history (`<epoch, start position>`, kept in an fsynced
//!   file) and the point where two logs diverge, to which a (re)joining replica truncates.
//! - [`epoch_file`]: that history's fsynced file in the log directory.
//! - [`in_sync`]: the in-sync set of a master shard, its confirmed position (the high
//!   watermark consumers may read up to) and the statuses of synchronously replicated sends.
//! - [`role_override`]: the role `ringmq cluster promote` gave a replica broker, kept in its
//!   data directory so a restart keeps it.
pub mod config;
pub mod epoch_file;
pub mod epochs;
pub mod in_sync;
pub mod role_override;
