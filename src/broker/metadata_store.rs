//! Durable topic metadata: `<data_dir>/topics.json`.
//!
//! Loaded once on the main thread before the shards start ([`load`]); afterwards only shard 0
//! writes it ([`MetadataStore::save`]), each change replacing the file atomically and durably
//! (temp file, fdatasync, rename, directory fsync, via the storage seam's `write_atomic`), and
//! before the change is acknowledged or broadcast. A crash therefore leaves either the old or
//! the new table, never a mix.

use std::io;
use std::path::{Path, PathBuf};

use super::topics::TopicTable;
use crate::storage::dma_dir::DmaDir;
use crate::storage::file::LogDir;
use crate::storage::IoMode;

pub const FILE_NAME: &str = "topics.json";

/// Reads the table, or a new empty one when the file does not exist. Refuses a table written
/// by a broker with a different shard count (queue placement would change and data would
/// appear lost).
pub fn load(data_dir: &Path, shard_count: usize) -> Result<TopicTable, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let path = data_dir.join(FILE_NAME);
    let table = match std::fs::read(&path) {
        Ok(bytes) => TopicTable::from_json(&bytes)
            .map_err(|e| format!("topic metadata {} is invalid: {e}", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => TopicTable::new(shard_count as u32),
        Err(e) => return Err(format!("cannot read topic metadata {}: {e}", path.display())),
    };
    if table.shard_count as usize != shard_count {
        return Err(format!(
            "the data in {} was written by a broker with {} shards but this one is configured \
             with {shard_count}; queues are placed by shard count, so start it with \
             shards = {}",
            data_dir.display(),
            table.shard_count,
            table.shard_count
        ));
    }
    Ok(table)
}

/// Shard 0's writer of the table.
pub struct MetadataStore {
    dir: DmaDir,
    path: PathBuf,
}

impl MetadataStore {
    pub async fn open(data_dir: &Path) -> Result<MetadataStore, String> {
        let dir = DmaDir::open(data_dir, IoMode::Buffered).await?;
        Ok(MetadataStore { dir, path: data_dir.join(FILE_NAME) })
    }

    /// Replaces the stored table; returns only once the new file and its name are durable.
    pub async fn save(&self, table: &TopicTable) -> Result<(), String> {
        self.dir
            .write_atomic(FILE_NAME, &table.to_json())
            .await
            .map_err(|e| format!("cannot write topic metadata {}: {e}", self.path.display()))
    }
}
