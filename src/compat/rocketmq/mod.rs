//! The RocketMQ 4.x remoting front: what existing RocketMQ clients (Java, C++, Python, Node)
//! speak to name servers and brokers.
//!
//! - [`codec`]: remoting frames, JSON and binary headers, request/response/oneway flags.
pub mod codec;
