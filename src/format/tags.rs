//! Per-batch tag summary: a 64-bit Bloom filter with two probes per tag.
//!
//! The broker uses it to skip batches that cannot match a consumer's tag expression without
//! decoding records; a batch that *may* match is sent whole and the client drops the records
//! whose tag does not match, so filtering is exact for the user.

/// Bloom filter of the tags in one batch. `0` means no record in the batch has a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TagSummary(pub u64);

impl TagSummary {
    pub const EMPTY: TagSummary = TagSummary(0);

    fn bits(tag: &[u8]) -> u64 {
        let h1 = crate::format::crc::crc32c(tag);
        let h2 = crate::format::crc::crc32c_append(0x9E37_79B9, tag);
        (1u64 << (h1 & 63)) | (1u64 << (h2 & 63))
    }

    pub fn add(&mut self, tag: &[u8]) {
        self.0 |= Self::bits(tag);
    }

    /// False means no record of the batch carries `tag`; true means some may.
    pub fn may_contain(&self, tag: &[u8]) -> bool {
        let b = Self::bits(tag);
        self.0 & b == b
    }

    /// True when any of `tags` may be present.
    pub fn may_contain_any<'a>(&self, tags: impl IntoIterator<Item = &'a [u8]>) -> bool {
        tags.into_iter().any(|t| self.may_contain(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut s = TagSummary::EMPTY;
        s.add(b"TagA");
        s.add(b"TagB");
        assert!(s.may_contain(b"TagA") && s.may_contain(b"TagB"));
        let misses = (0..1000).filter(|i| s.may_contain(format!("other{i}").as_bytes())).count();
        assert!(misses < 50, "{misses} false positives of 1000");
        assert!(!TagSummary::EMPTY.may_contain(b"TagA"));
    }
}
