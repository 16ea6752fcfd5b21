//! API keys and the versions this build speaks.

/// Request types. Each key has one version (1) so far; a new version is added next to the
/// old one and the broker answers `UNSUPPORTED_VERSION` for versions it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    Metadata = 1,
    CreateTopic = 2,
    DeleteTopic = 3,
    ListTopics = 4,
    Produce = 5,
    Fetch = 6,
    Offsets = 7,
    Stats = 8,
    /// Hands out an idempotent producer id (docs/protocol.md).
    InitProducer = 9,
    /// An idempotent producer id and the broker's sequence window: how many batches per
    /// queue a producer may have unanswered (docs/protocol.md, "Idempotent produce").
    InitProducerWindow = 23,
    // Consumer groups (`super::group`).
    Heartbeat = 10,
    LeaveGroup = 11,
    GroupMembers = 12,
    WatchGroup = 13,
    CommitOffsets = 14,
    FetchOffsets = 15,
    LockQueues = 16,
    UnlockQueues = 17,
    ResetOffsets = 18,
    ListGroups = 19,
    /// A produce held by the broker until a delivery time (scheduled messages).
    ProduceScheduled = 20,
    /// Batches for several queues in one request (`super::produce_multi`).
    ProduceMulti = 21,
    /// Several queues read in one request, in log order (`super::fetch_multi`).
    FetchMulti = 22,
    /// A FETCH that starts where an earlier fetch of this connection ends, so a queue's next
    /// fetch can be sent before the answer to the one before it (docs/protocol.md).
    FetchNext = 24,
    // Transactions (`super::transaction`).
    EndTransaction = 30,
    CheckTransactions = 31,
    ListTransactions = 32,
    /// Messages of a topic by key, from one shard's key index (`super::key_query`).
    QueryKeys = 43,
    // Replication between a replica shard and its master shard (`super::replication`).
    ReplicaJoin = 40,
    ReplicaFetch = 41,
    ReplicaTopics = 42,
    /// Makes a replica broker the master of its group (`ringmq cluster promote`).
    ReplicaPromote = 44,
    /// Forgets a consumer group without members: its committed offsets (`super::group`).
    DeleteGroup = 45,
}

impl ApiKey {
    pub const ALL: &'static [ApiKey] = &[
        ApiKey::Metadata,
        ApiKey::CreateTopic,
        ApiKey::DeleteTopic,
        ApiKey::ListTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::Offsets,
        ApiKey::Stats,
        ApiKey::InitProducer,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::GroupMembers,
        ApiKey::WatchGroup,
        ApiKey::CommitOffsets,
        ApiKey::FetchOffsets,
        ApiKey::LockQueues,
        ApiKey::UnlockQueues,
        ApiKey::ResetOffsets,
        ApiKey::ListGroups,
        ApiKey::ProduceScheduled,
        ApiKey::ProduceMulti,
        ApiKey::FetchMulti,
        ApiKey::InitProducerWindow,
        ApiKey::FetchNext,
        ApiKey::EndTransaction,
        ApiKey::CheckTransactions,
        ApiKey::ListTransactions,
        ApiKey::QueryKeys,
        ApiKey::ReplicaJoin,
        ApiKey::ReplicaFetch,
        ApiKey::ReplicaTopics,
        ApiKey::ReplicaPromote,
        ApiKey::DeleteGroup,
    ];

    /// Served by a consumer group's coordinator (`super::group`).
    pub fn is_group(self) -> bool {
        (ApiKey::Heartbeat as u16..=ApiKey::ListGroups as u16).contains(&(self as u16))
            || self == ApiKey::DeleteGroup
    }

    /// A transaction request (`super::transaction`).
    pub fn is_transaction(self) -> bool {
        (ApiKey::EndTransaction as u16..=ApiKey::ListTransactions as u16).contains(&(self as u16))
    }

    /// A replication request (`super::replication`).
    pub fn is_replication(self) -> bool {
        (ApiKey::ReplicaJoin as u16..=ApiKey::ReplicaTopics as u16).contains(&(self as u16))
            || self == ApiKey::ReplicaPromote
    }

    pub fn from_u16(v: u16) -> Option<ApiKey> {
        ApiKey::ALL.iter().copied().find(|k| *k as u16 == v)
    }

    /// Versions the broker accepts for this key, as an inclusive range.
    pub fn supported_versions(self) -> (u16, u16) {
        (1, 1)
    }

    /// The version clients of this build send.
    pub fn current_version(self) -> u16 {
        self.supported_versions().1
    }

    pub fn supports(self, version: u16) -> bool {
        let (lo, hi) = self.supported_versions();
        (lo..=hi).contains(&version)
    }
}
