//! The header the harness writes at the start of every message body, so a consumer can tell
//! when the message was meant to be sent (end-to-end latency), who sent it and in which order
//! (counts, duplicates, gaps, per-key order). Little-endian, fixed 32 bytes:
//! `intended_ns u64 | producer u32 | key u32 | seq u64 | key_seq u64`.

pub const PREFIX_LEN: usize = 32;

/// No key (the message was sent without one).
pub const NO_KEY: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Intended send time, nanoseconds since the harness's clock origin.
    pub intended_ns: u64,
    pub producer: u32,
    pub key: u32,
    /// The producer's message number, from 0.
    pub seq: u64,
    /// The message number within (producer, key), from 0.
    pub key_seq: u64,
}

impl Prefix {
    pub fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.intended_ns.to_le_bytes());
        out[8..12].copy_from_slice(&self.producer.to_le_bytes());
        out[12..16].copy_from_slice(&self.key.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.key_seq.to_le_bytes());
    }

    pub fn read(body: &[u8]) -> Option<Prefix> {
        let b = body.get(..PREFIX_LEN)?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(Prefix {
            intended_ns: u64_at(0),
            producer: u32_at(8),
            key: u32_at(12),
            seq: u64_at(16),
            key_seq: u64_at(24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = Prefix { intended_ns: 1 << 40, producer: 3, key: NO_KEY, seq: 9, key_seq: 2 };
        let mut b = vec![0u8; 40];
        p.write(&mut b);
        assert_eq!(Prefix::read(&b), Some(p));
        assert_eq!(Prefix::read(&b[..31]), None);
    }
}
