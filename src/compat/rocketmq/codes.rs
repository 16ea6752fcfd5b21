//! The numbers of RocketMQ 4.x's remoting protocol the front speaks: request codes, response
//! codes, message properties and flag bits (as `RequestCode`, `ResponseCode`, `MessageConst`,
//! `MessageSysFlag`, `PullSysFlag` and `PermName` define them).

/// Request codes (`RequestCode`).
pub mod request {
    pub const SEND_MESSAGE: i32 = 10;
    pub const PULL_MESSAGE: i32 = 11;
    pub const QUERY_MESSAGE: i32 = 12;
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    pub const GET_MAX_OFFSET: i32 = 30;
    pub const GET_MIN_OFFSET: i32 = 31;
    pub const VIEW_MESSAGE_BY_ID: i32 = 33;
    pub const HEART_BEAT: i32 = 34;
    pub const UNREGISTER_CLIENT: i32 = 35;
    pub const CONSUMER_SEND_MSG_BACK: i32 = 36;
    pub const END_TRANSACTION: i32 = 37;
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    /// Broker to client: is this half message's local transaction decided?
    pub const CHECK_TRANSACTION_STATE: i32 = 39;
    /// Broker to client: a group's members changed (rebalance now).
    pub const NOTIFY_CONSUMER_IDS_CHANGED: i32 = 40;
    pub const LOCK_BATCH_MQ: i32 = 41;
    pub const UNLOCK_BATCH_MQ: i32 = 42;
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    pub const GET_ALL_TOPIC_LIST_FROM_NAMESERVER: i32 = 206;
    /// `mqadmin deleteSubGroup`: header `groupName`, `cleanOffset` (newer brokers).
    pub const DELETE_SUBSCRIPTIONGROUP: i32 = 207;
    pub const SEND_MESSAGE_V2: i32 = 310;
    pub const SEND_BATCH_MESSAGE: i32 = 320;
}

/// Response codes (`ResponseCode`; 0..=4 are in `super::codec::sys_code`).
pub mod response {
    pub use super::super::codec::sys_code::*;
    pub const FLUSH_DISK_TIMEOUT: i32 = 10;
    pub const FLUSH_SLAVE_TIMEOUT: i32 = 12;
    pub const MESSAGE_ILLEGAL: i32 = 13;
    pub const SERVICE_NOT_AVAILABLE: i32 = 14;
    pub const TOPIC_NOT_EXIST: i32 = 17;
    pub const PULL_NOT_FOUND: i32 = 19;
    pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
    pub const PULL_OFFSET_MOVED: i32 = 21;
    pub const QUERY_NOT_FOUND: i32 = 22;
    pub const SUBSCRIPTION_PARSE_FAILED: i32 = 23;
}

/// Message property names (`MessageConst`).
pub mod property {
    pub const KEYS: &str = "KEYS";
    pub const TAGS: &str = "TAGS";
    pub const DELAY: &str = "DELAY";
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
    /// `true` on a transaction's half message (`PROPERTY_TRANSACTION_PREPARED`).
    pub const TRAN_MSG: &str = "TRAN_MSG";
    /// The producer group of a half message (`PROPERTY_PRODUCER_GROUP`).
    pub const PGROUP: &str = "PGROUP";
    /// ringmq's own: a RocketMQ message's `flag` when it is not 0 (RocketMQ stores it in the
    /// message; ringmq's record has no field for it). Never shown to RocketMQ clients.
    pub const RINGMQ_FLAG: &str = "RMQ_FLAG";
    /// ringmq's own: `1` when the body was sent zlib-compressed (sysFlag bit 0): the body is
    /// kept as sent, and a RocketMQ consumer gets the bit back. Never shown to RocketMQ clients.
    pub const RINGMQ_COMPRESSED: &str = "RMQ_COMPRESSED";
}

/// `MessageSysFlag` bits.
pub const SYSFLAG_COMPRESSED: i32 = 1;

/// `MessageSysFlag`'s transaction values (bits 2-3) and END_TRANSACTION's `commitOrRollback`.
pub mod txn_flag {
    /// The bits that hold the transaction value.
    pub const MASK: i32 = 3 << 2;
    /// Not a transaction; as `commitOrRollback`: unknown (decide later, on a check).
    pub const NOT_TYPE: i32 = 0;
    pub const PREPARED: i32 = 1 << 2;
    pub const COMMIT: i32 = 2 << 2;
    pub const ROLLBACK: i32 = 3 << 2;
}

/// `PullSysFlag` bits.
pub mod pull_flag {
    pub const COMMIT_OFFSET: i32 = 1;
    pub const SUSPEND: i32 = 1 << 1;
    pub const SUBSCRIPTION: i32 = 1 << 2;
}

/// `PermName`: read and write.
pub const PERM_READ_WRITE: i32 = (1 << 2) | (1 << 1);
