//! The RocketMQ 4.x remoting front: what existing RocketMQ clients (Java, C++, Python, Node)
//! speak to name servers and brokers, translated onto ringmq's shards
//! (`../shared/DESIGN.md` section 4; `docs/rocketmq-compat.md` for users).
//!
//! - [`codec`]: remoting frames, JSON and binary headers, request/response/oneway flags.
//! - [`codes`]: request and response codes, property names, flag bits.
//! - [`headers`]: the custom headers of the requests served, as typed structs.
//! - [`stored`]: RocketMQ's stored-message encoding (pull answers), properties, message ids.
//! - [`translate`]: RocketMQ messages to ringmq records and back; batch bodies; tag filters.
//! - [`bodies`]: JSON bodies (routes, cluster info, heartbeats, consumer lists).
//! - [`namesrv`]: the name server (in-process with `ringmq broker --rocketmq`, or alone).
//! - [`dispatch`]: broker requests as native requests through the shard router.
//! - [`consume_ops`]: send-back (retry, dead letters), view by id, queue locks.
//! - [`query`]: QUERY_MESSAGE by key through the key index.
//! - [`transaction`]: half messages, END_TRANSACTION and check-back on native transactions.
//! - [`front`]: the broker port's connections, on every shard.
//! - [`config`]: the `[rocketmq]` section.
pub mod bodies;
pub mod codec;
pub mod codes;
pub mod config;
pub mod consume_ops;
pub mod dispatch;
pub mod front;
pub mod headers;
pub mod namesrv;
pub mod query;
pub mod standalone;
pub mod stored;
pub mod transaction;
pub mod translate;
