//! Error codes carried in every response header. `0` is success.
//!
//! An error response's payload is `string message` (human-readable, says what to fix);
//! `OFFSET_OUT_OF_RANGE` adds `u64 min | u64 next` so a consumer can reposition without
//! another round trip (to a replica's REPLICA_JOIN or REPLICA_FETCH: the master's oldest
//! retained log position and its log end); `CORRUPT_DATA` adds `u64 first | u64 next`, the offsets of the stored
//! batch that failed verification, so a consumer can skip it knowingly; `NOT_MASTER` adds
//! `string master`, the master's `ip:port`. Codes are stable: never renumber, only append.

/// Whether a client may retry the same request (possibly after refreshing metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retriable {
    Yes,
    No,
}

macro_rules! error_codes {
    ($($name:ident = $value:literal, $retry:ident, $text:literal;)*) => {
        /// Stable error codes of the native protocol.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[allow(non_camel_case_types)]
        pub enum ErrorCode {
            $(#[doc = $text] $name = $value,)*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            pub fn from_u16(v: u16) -> Option<ErrorCode> {
                match v {
                    $($value => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }

            /// The code's SCREAMING_CASE name as documented in docs/protocol.md.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($name),)*
                }
            }

            pub fn retriable(self) -> Retriable {
                match self {
                    $(ErrorCode::$name => Retriable::$retry,)*
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                }
            }
        }
    };
}

error_codes! {
    NONE = 0, No, "success";
    UNKNOWN_TOPIC = 1, No, "the topic does not exist";
    UNKNOWN_QUEUE = 2, No, "the queue id is not below the topic's queue count";
    INVALID_TOPIC_NAME = 3, No, "topic names match ^[A-Za-z0-9_%|-]{1,127}$";
    TOPIC_EXISTS = 4, No, "a topic with this name already exists";
    INVALID_BATCH = 5, No, "the batch is malformed (length, magic, version, attributes, records)";
    CORRUPT_BATCH = 6, No, "the batch CRC does not match its bytes";
    BATCH_TOO_LARGE = 7, No, "the batch exceeds the broker's max batch size";
    OFFSET_OUT_OF_RANGE = 8, No, "the offset is outside [min, next]; the payload carries both (to a replica: its log position is below the master's oldest retained one, [min, next) are the master's log positions)";
    UNSUPPORTED_API = 9, No, "the api key is unknown to this broker";
    UNSUPPORTED_VERSION = 10, No, "the api version is not supported for this api key";
    FRAME_TOO_LARGE = 11, No, "the frame exceeds max_frame_bytes; the connection is closed";
    NOT_OWNER = 12, Yes, "this shard does not own the queue; refresh metadata";
    SHARD_FAILED = 13, No, "the owning shard's storage stopped after an I/O failure";
    INTERNAL = 14, No, "an unexpected broker error; the message says what happened";
    MALFORMED_REQUEST = 15, No, "the request payload does not decode";
    INVALID_ARGUMENT = 16, No, "a request field has an invalid value (e.g. zero queues)";
    SHUTTING_DOWN = 17, Yes, "the broker is stopping; retry on another connection later";
    TOO_MANY_TOPICS = 18, No, "the broker's topic limit is reached";
    DISK_FULL = 19, Yes, "the owning shard's disk has no room for new data; retry once space is freed";
    DUPLICATE_SEQUENCE = 20, No, "the sequence is older than the window kept for the producer";
    OUT_OF_ORDER_SEQUENCE = 21, No, "the sequence does not follow the producer's last one";
    UNSUPPORTED_FEATURE = 22, No, "a feature this broker does not implement";
    CORRUPT_DATA = 23, No, "a stored batch fails its checksum on read; the payload carries its offsets [first, next)";
    NOT_COORDINATOR = 24, Yes, "this shard does not coordinate the group; refresh metadata";
    UNKNOWN_MEMBER = 25, No, "the client is not a member of the group (its session expired?); heartbeat to join again";
    GROUP_LIMIT = 26, No, "a consumer-group limit is reached (groups, members, subscriptions, membership bytes, offsets, a group's answer over the frame limit, locks, watchers)";
    STALE_GENERATION = 27, No, "the group's offsets were reset after the committer's rebalance; fetch the committed offsets again";
    INVALID_DELIVERY_TIME = 28, No, "a scheduled produce asks for an unknown delay level or a time beyond the horizon";
    SCHEDULE_FULL = 29, Yes, "the owning shard holds its limit of pending scheduled messages; retry once some are delivered";
    UNKNOWN_TRANSACTION = 30, No, "no undecided transaction with this id on this queue (wrong id, queue or producer group)";
    TRANSACTION_DECIDED = 31, No, "the transaction was already committed or rolled back (the message says which), or is being ended by another request";
    TRANSACTION_LIMIT = 32, Yes, "the shard holds its limit of undecided transactions (transaction.max_undecided_halves); retry once some end";
    NOT_MASTER = 33, No, "this broker is a replica: it serves reads only; the payload carries its master's address, send writes there";
    SLAVE_NOT_AVAILABLE = 34, Yes, "sync replication: the shard's in-sync set has fewer than min_in_sync_replicas members; nothing was written, retry once replicas caught up";
    GROUP_NOT_EMPTY = 35, No, "the group has live members: only a group without members can be deleted (stop its consumers, or wait for their sessions to end)";
    FETCH_CHAIN_BROKEN = 36, No, "a FETCH_NEXT names no fetch this connection can continue (unknown, already continued, forgotten, or it failed): fetch from an offset";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_dense() {
        // Dense except for numbers handed to work merged separately (28-29: scheduled delivery).
        let mut previous = None;
        for c in ErrorCode::ALL {
            assert!(previous.is_none_or(|p| p < *c as u16), "{c} out of order");
            previous = Some(*c as u16);
            assert_eq!(ErrorCode::from_u16(*c as u16), Some(*c));
        }
        assert_eq!(ErrorCode::ALL[0] as u16, 0);
        let highest = previous.unwrap() as usize;
        assert!(ErrorCode::ALL.len() + 2 > highest, "codes missing below {highest}");
        assert_eq!(ErrorCode::from_u16(999), None);
    }
}
