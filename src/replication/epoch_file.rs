//! The fsynced epoch file of a shard's log directory (`epochs`): its [`EpochHistory`].
//!
//! Written atomically (temporary file, fsync, rename, directory fsync) before the log holds
//! data of a new epoch, so after a crash the file never misses an epoch the log has; it may
//! name an epoch whose data was lost, which [`load`] drops by truncating the history to the
//! recovered log end.

use super::epochs::EpochHistory;
use crate::storage::file::LogDir;
use crate::storage::{LogPosition, StorageError};

/// The epoch file's name in a log directory.
pub const EPOCH_FILE: &str = "epochs";

/// Reads the history of the log in `dir`, whose recovered end is `end` (an empty history when
/// the file does not exist: a log written before replication).
pub async fn load<D: LogDir>(dir: &D, end: LogPosition) -> Result<EpochHistory, StorageError> {
    let bytes = dir
        .read_all(EPOCH_FILE)
        .await
        .map_err(|e| StorageError::io("reading the epoch file", e))?;
    let mut history = match bytes {
        None => EpochHistory::new(),
        Some(b) => EpochHistory::decode(&b).map_err(|e| StorageError::Corrupt {
            file: EPOCH_FILE.into(),
            offset: 0,
            reason: e.to_string(),
        })?,
    };
    history.truncate_to(end.get());
    Ok(history)
}

/// Makes `history` the durable content of the epoch file.
pub async fn save<D: LogDir>(dir: &D, history: &EpochHistory) -> Result<(), StorageError> {
    dir.write_atomic(EPOCH_FILE, &history.encode())
        .await
        .map_err(|e| StorageError::io("writing the epoch file", e))
}
