//! Little-endian primitives for protocol payloads: a bounds-checked reader and a writer.
//!
//! Every read says whether the bytes were there; nothing here panics on short or hostile input.
//! Strings are `u16 len | utf-8`, byte blobs are `u32 len | bytes`, lists are `u32 count | items`.

/// Why a payload could not be decoded. Maps to `ErrorCode::MalformedRequest` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload truncated: {field} needs {needed} more bytes, {have} left")]
    Truncated { field: &'static str, needed: usize, have: usize },
    #[error("{field} is not valid UTF-8")]
    BadUtf8 { field: &'static str },
    #[error("{field} count {count} exceeds the limit {max}")]
    TooMany { field: &'static str, count: u64, max: u64 },
    #[error("{field} has unknown value {value}")]
    BadValue { field: &'static str, value: u64 },
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
}

/// A cursor over a payload.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { field, needed: n, have: self.rest.len() });
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let b = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// A `u16`-length-prefixed UTF-8 string.
    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u16(field)? as usize;
        let b = self.take(n, field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| DecodeError::BadUtf8 { field })
    }

    /// A `u32`-length-prefixed byte blob (borrowed).
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(field)? as usize;
        self.take(n, field)
    }

    /// A `u32` element count, refused above `max` and above what the remaining bytes could
    /// hold at `min_item_bytes` each (so a hostile count cannot make us allocate).
    pub fn count(
        &mut self,
        field: &'static str,
        max: u32,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(field)?;
        let fits = self.rest.len() / min_item_bytes.max(1);
        if n > max || n as usize > fits {
            return Err(DecodeError::TooMany {
                field,
                count: n.into(),
                max: u64::from(max).min(fits as u64),
            });
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.rest.len()))
        }
    }
}

/// Appends primitives to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Writer { buf }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Writes a string, truncated (at a char boundary) to `u16::MAX` bytes.
    pub fn string(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.buf.extend_from_slice(&s.as_bytes()[..end]);
        self
    }
    /// Writes a byte blob; callers keep blobs under the frame bound (well below 4 GiB).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let n = u32::try_from(b.len()).expect("blob under 4 GiB (frames are bounded)");
        self.u32(n);
        self.buf.extend_from_slice(b);
        self
    }
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).expect("list under 4G items"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::new();
        w.u8(1).u16(2).u32(3).u64(4).i64(-5).string("héllo").bytes(b"xyz").count(2);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 2);
        assert_eq!(r.u32("c").unwrap(), 3);
        assert_eq!(r.u64("d").unwrap(), 4);
        assert_eq!(r.i64("e").unwrap(), -5);
        assert_eq!(r.string("f").unwrap(), "héllo");
        assert_eq!(r.bytes("g").unwrap(), b"xyz");
        assert!(matches!(r.count("h", 10, 1), Err(DecodeError::TooMany { .. })));
        let mut r = Reader::new(&[5, 0, b'a']);
        assert!(matches!(r.string("s"), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn long_strings_are_cut_at_char_boundaries() {
        let s = "é".repeat(40_000);
        let mut w = Writer::new();
        w.string(&s);
        let got = Reader::new(&w.buf).string("s").unwrap();
        assert!(got.len() <= u16::MAX as usize && s.starts_with(&got));
    }
}
