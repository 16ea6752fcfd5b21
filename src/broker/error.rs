//! A request's failure as the broker reports it: an error code, a message that says what to
//! fix, and the detail some codes carry. `Send`, so it crosses the shard mesh.

use crate::format::FormatError;
use crate::protocol::{ErrorCode, ErrorDetail};
use crate::storage::StorageError;

use super::topics::TopicError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: ErrorDetail,
}

impl BrokerError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        BrokerError { code, message: message.into(), detail: ErrorDetail::None }
    }
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<TopicError> for BrokerError {
    fn from(e: TopicError) -> Self {
        BrokerError::new(e.code(), e.to_string())
    }
}

impl From<StorageError> for BrokerError {
    fn from(e: StorageError) -> Self {
        let message = e.to_string();
        match e {
            StorageError::InvalidBatch(FormatError::CrcMismatch { .. }) => {
                BrokerError::new(ErrorCode::CORRUPT_BATCH, message)
            }
            StorageError::InvalidBatch(_) => BrokerError::new(ErrorCode::INVALID_BATCH, message),
            StorageError::BatchTooLarge { .. } => {
                BrokerError::new(ErrorCode::BATCH_TOO_LARGE, message)
            }
            StorageError::OffsetOutOfRange { min, next, .. } => BrokerError {
                code: ErrorCode::OFFSET_OUT_OF_RANGE,
                message,
                detail: ErrorDetail::OffsetRange { min: min.get(), next: next.get() },
            },
            StorageError::CorruptBatch { first_offset, next_offset, .. } => BrokerError {
                code: ErrorCode::CORRUPT_DATA,
                message,
                detail: ErrorDetail::CorruptRange {
                    first: first_offset.get(),
                    next: next_offset.get(),
                },
            },
            StorageError::Failed { .. } => BrokerError::new(ErrorCode::SHARD_FAILED, message),
            StorageError::DiskFull { .. } => BrokerError::new(ErrorCode::DISK_FULL, message),
            StorageError::Closed => BrokerError::new(ErrorCode::SHUTTING_DOWN, message),
            StorageError::NotABatchBoundary { .. } => {
                BrokerError::new(ErrorCode::INVALID_ARGUMENT, message)
            }
            StorageError::BelowOldest { oldest, end, .. } => BrokerError {
                code: ErrorCode::OFFSET_OUT_OF_RANGE,
                message,
                detail: ErrorDetail::OffsetRange { min: oldest, next: end },
            },
            _ => BrokerError::new(ErrorCode::INTERNAL, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_a_retriable_disk_full_status() {
        let e = BrokerError::from(StorageError::DiskFull {
            dir: "data/shard-0".into(),
            needed_bytes: 1 << 30,
            free_bytes: 4096,
            reason: "No space left on device".into(),
        });
        assert_eq!(e.code, ErrorCode::DISK_FULL);
        assert_eq!(e.code.retriable(), crate::protocol::Retriable::Yes);
        assert!(e.message.contains("disk full") && e.message.contains("free space"), "{e}");
    }
}
