//! Fronts that let other systems' clients use ringmq unmodified (`../shared/DESIGN.md`
//! section 4). Each front translates its protocol onto the same shard operations as the
//! native protocol; none has a storage path of its own.
pub mod rocketmq;
