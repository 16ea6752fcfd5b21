//! Queue placement: which shard owns queue `q` of topic `t`.
//!
//! `owner = (crc32c(t) + q) % shards`: a topic's queues spread over all shards, and every shard
//! (and every client holding metadata) computes the owner without a lookup. The hash is fixed
//! (CRC32C of the name's bytes), never a randomized hasher, so placement is identical across
//! processes and restarts. It depends on the shard count, which is why the topic table records
//! the count and the broker refuses to start with a different one.

/// A shard's number, `0..shards`: a type of its own, so a shard number is never mixed up with a
/// queue id, a count or an index into something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(usize);

impl ShardId {
    /// The shard that runs topic changes (the topic coordinator).
    pub const FIRST: ShardId = ShardId(0);

    #[inline]
    pub const fn new(n: usize) -> Self {
        ShardId(n)
    }

    #[inline]
    pub const fn get(self) -> usize {
        self.0
    }

    /// Every shard of a broker with `shards` shards, in order.
    pub fn all(shards: usize) -> impl Iterator<Item = ShardId> {
        (0..shards).map(ShardId)
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The shard that owns `queue_id` of `topic`.
pub fn owner_shard(topic: &str, queue_id: u32, shards: usize) -> ShardId {
    assert!(shards > 0, "a broker has at least one shard");
    let h = u64::from(crate::format::crc::crc32c(topic.as_bytes()));
    ShardId(((h + u64::from(queue_id)) % shards as u64) as usize)
}

/// The shard that coordinates consumer group `group` (membership, offsets, queue locks).
pub fn coordinator_shard(group: &str, shards: usize) -> ShardId {
    assert!(shards > 0, "a broker has at least one shard");
    ShardId((crate::format::crc::crc32c(group.as_bytes()) as usize) % shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spreads_queues() {
        // Pinned expectations, computed independently of this code (CRC-32C as specified in
        // docs/format.md): a change to the hash or the formula moves data between shards on
        // upgrade, so it must fail here. crc32c("TopicTest") = 3436752183,
        // crc32c("orders") = 161988746.
        assert_eq!(
            crate::format::crc::crc32c(b"123456789"),
            0xE306_9283,
            "the CRC-32C check value"
        );
        assert_eq!(crate::format::crc::crc32c(b"TopicTest"), 3_436_752_183);
        let owners: Vec<_> = (0..8).map(|q| owner_shard("TopicTest", q, 4).get()).collect();
        assert_eq!(owners, [3, 0, 1, 2, 3, 0, 1, 2]);
        let owners: Vec<_> = (0..8).map(|q| owner_shard("orders", q, 4).get()).collect();
        assert_eq!(owners, [2, 3, 0, 1, 2, 3, 0, 1]);
        assert_eq!(owner_shard("orders", 0, 3).get(), 2);
        assert_eq!(owner_shard("%SYS%offsets", 0, 7).get(), 4);
        for s in 0..4 {
            let owners: Vec<_> = (0..8).map(|q| owner_shard("TopicTest", q, 4).get()).collect();
            assert_eq!(owners.iter().filter(|&&o| o == s).count(), 2, "queues spread evenly");
        }
        assert_eq!(owner_shard("x", 5, 1).get(), 0);
        assert_eq!(owner_shard("t", 1, 3).get(), (owner_shard("t", 0, 3).get() + 1) % 3);
    }
}
