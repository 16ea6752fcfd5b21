//! Client errors: what failed, whether retrying can help, and the broker's own words.

use crate::protocol::{ErrorCode, ErrorDetail, ErrorResponse, Retriable};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("connection to {addr} failed: {reason}")]
    Io { addr: String, reason: String },
    /// The connection closed before the reply came (the request may or may not have run).
    #[error("connection to {0} closed before the reply")]
    Disconnected(String),
    #[error("no reply within {0} ms")]
    Timeout(u64),
    /// A send's deadline (`send_timeout`) passed while its attempts were refused with
    /// retriable errors: `last` is the last of them (a broker error such as DISK_FULL, or a
    /// connection failure). [`ClientError::code`] and [`ClientError::is_retriable`] are
    /// `last`'s. A send that was only ever unanswered fails with [`ClientError::Timeout`].
    #[error("gave up after {after_ms} ms of retries; last error: {last}")]
    GaveUp { after_ms: u64, last: Box<ClientError> },
    /// The broker answered with an error.
    #[error("broker error {name} ({code}): {message}")]
    Broker { code: u16, name: String, message: String, detail: ErrorDetail },
    /// The broker's bytes did not decode (version mismatch or a bug).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A stored batch of the queue cannot be decoded (its records are malformed or its
    /// checksums fail), so records `[first_offset, next_offset)` cannot be delivered. Pulling
    /// from that offset again gets this error again; to skip the batch, and lose those records
    /// knowingly, pull from `next_offset` (the pull consumer never skips on its own).
    #[error(
        "corrupt data in {topic} queue {queue_id} at offsets [{first_offset}, {next_offset}): \
         {reason}; pull from offset {next_offset} to skip it"
    )]
    CorruptData {
        topic: String,
        queue_id: u32,
        first_offset: u64,
        next_offset: u64,
        reason: String,
    },
    /// The caller asked for something invalid (unknown topic in metadata, bad record...).
    #[error("{0}")]
    Invalid(String),
    #[error("the producer is closed")]
    Closed,
}

impl ClientError {
    pub fn from_response(e: ErrorResponse) -> Self {
        let name = e.known_code().map(|c| c.name().to_owned()).unwrap_or_else(|| "UNKNOWN".into());
        ClientError::Broker { code: e.code, name, message: e.message, detail: e.detail }
    }

    /// The broker's error code, if this is a broker error with a known code.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => ErrorCode::from_u16(*code),
            ClientError::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The master's address when a replica refused a write (`NOT_MASTER`): send it there.
    pub fn master_address(&self) -> Option<std::net::SocketAddr> {
        match self {
            ClientError::Broker { detail: ErrorDetail::NotMaster { master }, .. } => Some(*master),
            ClientError::GaveUp { last, .. } => last.master_address(),
            _ => None,
        }
    }

    /// Whether sending the same request again may succeed. Connection failures and timeouts
    /// count (the request may or may not have run); the producer's sends are idempotent, so
    /// its retries never store a batch twice (docs/protocol.md, "Idempotent produce").
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io { .. } | ClientError::Disconnected(_) | ClientError::Timeout(_) => true,
            ClientError::GaveUp { last, .. } => last.is_retriable(),
            ClientError::Broker { .. } => {
                self.code().map(|c| c.retriable() == Retriable::Yes).unwrap_or(false)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn replication_refusals_say_where_to_go_and_whether_to_retry() {
        let master = "10.0.0.1:10911".parse().unwrap();
        let e = ClientError::from_response(ErrorResponse {
            code: ErrorCode::NOT_MASTER as u16,
            message: "replica".into(),
            detail: ErrorDetail::NotMaster { master },
        });
        assert_eq!(e.master_address(), Some(master));
        assert!(!e.is_retriable(), "a replica never accepts the write: go to the master");
        let e = ClientError::from_response(ErrorResponse {
            code: ErrorCode::SLAVE_NOT_AVAILABLE as u16,
            message: "too few in sync".into(),
            detail: ErrorDetail::None,
        });
        assert!(e.is_retriable(), "nothing was written; replicas may catch up");
        assert_eq!(e.master_address(), None);
    }
}
