//! Helpers shared by the integration tests.
#![allow(dead_code)]

use ringmq::format::{BatchBuilder, BatchView, Record};
use ringmq::runtime::{run_on_new_executor, ExecutorOptions};
use ringmq::storage::{FlushMode, QueueOffset, StorageConfig};
use std::future::Future;

/// A queue offset from a number (tests count offsets as numbers).
pub fn off(offset: u64) -> QueueOffset {
    QueueOffset::new(offset)
}

/// Runs an async test body on a fresh glommio executor.
pub fn run<F, Fut, T>(make: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let opts = ExecutorOptions { name: "test".into(), cpu: None, io_memory_bytes: 1 << 20 };
    run_on_new_executor(opts, make).expect("executor")
}

/// A small config that rolls segments and fills chunks quickly.
pub fn small_config(mode: FlushMode) -> StorageConfig {
    StorageConfig {
        dir: "/sim".into(),
        segment_size_bytes: 64 * 1024,
        max_batch_bytes: 16 * 1024,
        chunk_size_bytes: 8192,
        chunk_pool_chunks: 8,
        cache_bytes: 16 * 1024,
        flush_mode: mode,
        flush_interval_ms: 5,
        flush_bytes: 32 * 1024,
        ..StorageConfig::default()
    }
}

/// A batch of `n` records whose bodies encode `(tag, i)` so reads can be checked.
pub fn batch(tag: u64, n: usize, body_len: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1 << 24);
    for i in 0..n {
        let mut body = format!("{tag}:{i}:").into_bytes();
        body.resize(body_len.max(body.len()), b'x');
        b.push(&Record {
            key: format!("k{tag}").as_bytes(),
            tag: b"T",
            properties: &[],
            body: &body,
            timestamp_ms: 1_000 + i as i64,
        })
        .unwrap();
    }
    b.finish(-1, -1)
}

/// The `tag` encoded in the first record body of a stored batch.
pub fn batch_tag(stored: &[u8]) -> u64 {
    let v = BatchView::parse(stored, usize::MAX).expect("stored batch parses");
    v.verify_stamp().expect("stamp crc");
    let r = v.records().next().unwrap().unwrap();
    let s = std::str::from_utf8(r.body).unwrap();
    s.split(':').next().unwrap().parse().unwrap()
}
