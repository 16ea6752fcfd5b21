//! Framing: length-prefixed frames, checked complete and bounded before anything is parsed.
//!
//! ```text
//! request:  u32 frame_len | u16 api_key | u16 api_version | u32 correlation_id | payload
//! response: u32 frame_len | u32 correlation_id | u16 error_code | payload
//! ```
//! `frame_len` counts the bytes after itself. All integers are little-endian (like the batch
//! format). [`check_request`] follows mini-redis' `Frame::check`: it looks at the buffered bytes
//! and says "need more", "one frame of n bytes is here", or "this is not a frame we accept",
//! without allocating or decoding the payload; the connection reads until a frame is complete
//! and never buffers more than `max_frame_bytes` for one frame.

use super::error_code::ErrorCode;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Request header after the prefix: api key, api version, correlation id.
pub const REQUEST_HEADER_LEN: usize = 2 + 2 + 4;
/// Response header after the prefix: correlation id, error code.
pub const RESPONSE_HEADER_LEN: usize = 4 + 2;
/// Default bound on one frame (prefix included): 8 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 << 20;
/// Bytes a PRODUCE frame needs besides its batch (prefix, header, a topic name of up to 255
/// bytes and the request's other fields): a batch fits a frame of `max_frame_bytes` when it
/// is at most `max_frame_bytes` minus this.
pub const PRODUCE_FRAME_OVERHEAD: usize = 4 + 8 + 2 + 255 + 4 + 1 + 4;

/// The fixed part of a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: u16,
    pub api_version: u16,
    pub correlation_id: u32,
}

/// The fixed part of a response frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub correlation_id: u32,
    /// Raw code; unknown values are kept so a newer broker's codes can be reported.
    pub error_code: u16,
}

/// What the buffered bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not a whole frame yet; read at least this many bytes in total before checking again.
    Incomplete { needed: usize },
    /// One whole frame of `frame_bytes` bytes (prefix included) starts the buffer.
    Complete { frame_bytes: usize },
}

/// Why buffered bytes can never become an acceptable frame. The connection answers with
/// the code (if it learned a correlation id) and closes: framing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {frame_bytes} bytes exceeds max_frame_bytes = {max}")]
    TooLarge { frame_bytes: u64, max: usize, correlation_id: Option<u32> },
    #[error("frame length {frame_len} is shorter than the {min}-byte header")]
    TooShort { frame_len: u32, min: usize },
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            FrameError::TooShort { .. } => ErrorCode::MALFORMED_REQUEST,
        }
    }
    pub fn correlation_id(&self) -> Option<u32> {
        match self {
            FrameError::TooLarge { correlation_id, .. } => *correlation_id,
            FrameError::TooShort { .. } => None,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn check(buf: &[u8], header_len: usize, max_frame_bytes: usize) -> Result<Check, FrameError> {
    if buf.len() < LEN_PREFIX {
        return Ok(Check::Incomplete { needed: LEN_PREFIX });
    }
    let frame_len = u32_at(buf, 0);
    let frame_bytes = LEN_PREFIX as u64 + u64::from(frame_len);
    if (frame_len as usize) < header_len {
        return Err(FrameError::TooShort { frame_len, min: header_len });
    }
    if frame_bytes > max_frame_bytes as u64 {
        // The correlation id sits after the api key and version in a request.
        let correlation_id =
            (buf.len() >= LEN_PREFIX + REQUEST_HEADER_LEN).then(|| u32_at(buf, LEN_PREFIX + 4));
        return Err(FrameError::TooLarge { frame_bytes, max: max_frame_bytes, correlation_id });
    }
    let frame_bytes = frame_bytes as usize;
    if buf.len() < frame_bytes {
        return Ok(Check::Incomplete { needed: frame_bytes });
    }
    Ok(Check::Complete { frame_bytes })
}

/// Checks the start of `buf` for one request frame (see the module doc).
pub fn check_request(buf: &[u8], max_frame_bytes: usize) -> Result<Check, FrameError> {
    check(buf, REQUEST_HEADER_LEN, max_frame_bytes)
}

/// Checks the start of `buf` for one response frame.
pub fn check_response(buf: &[u8], max_frame_bytes: usize) -> Result<Check, FrameError> {
    check(buf, RESPONSE_HEADER_LEN, max_frame_bytes).map_err(|e| match e {
        FrameError::TooLarge { frame_bytes, max, .. } => {
            FrameError::TooLarge { frame_bytes, max, correlation_id: None }
        }
        other => other,
    })
}

/// Splits a complete request frame (as reported by [`check_request`]) into header and payload.
pub fn split_request(frame: &[u8]) -> (RequestHeader, &[u8]) {
    assert!(frame.len() >= LEN_PREFIX + REQUEST_HEADER_LEN, "split_request needs a checked frame");
    let h = RequestHeader {
        api_key: u16::from_le_bytes([frame[4], frame[5]]),
        api_version: u16::from_le_bytes([frame[6], frame[7]]),
        correlation_id: u32_at(frame, 8),
    };
    (h, &frame[LEN_PREFIX + REQUEST_HEADER_LEN..])
}

/// Splits a complete response frame into header and payload.
pub fn split_response(frame: &[u8]) -> (ResponseHeader, &[u8]) {
    assert!(
        frame.len() >= LEN_PREFIX + RESPONSE_HEADER_LEN,
        "split_response needs a checked frame"
    );
    let h = ResponseHeader {
        correlation_id: u32_at(frame, 4),
        error_code: u16::from_le_bytes([frame[8], frame[9]]),
    };
    (h, &frame[LEN_PREFIX + RESPONSE_HEADER_LEN..])
}

/// Starts a request frame; the caller appends the payload and calls [`finish_frame`].
pub fn begin_request(header: RequestHeader) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    append_request_head(&mut b, header);
    b
}

/// [`begin_request`] at the end of `out` (after other frames of a gathered write): a zero
/// length prefix, then the request header.
pub fn append_request_head(out: &mut Vec<u8>, header: RequestHeader) {
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.extend_from_slice(&header.api_key.to_le_bytes());
    out.extend_from_slice(&header.api_version.to_le_bytes());
    out.extend_from_slice(&header.correlation_id.to_le_bytes());
}

/// Starts a response frame; the caller appends the payload and calls [`finish_frame`].
pub fn begin_response(correlation_id: u32, code: ErrorCode) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&correlation_id.to_le_bytes());
    b.extend_from_slice(&(code as u16).to_le_bytes());
    b
}

/// Writes the length prefix of a frame built with `begin_*`.
pub fn finish_frame(frame: &mut [u8]) {
    assert!(frame.len() >= LEN_PREFIX, "frame has no prefix");
    let len = u32::try_from(frame.len() - LEN_PREFIX).expect("frame under 4 GiB");
    frame[..4].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(payload: &[u8]) -> Vec<u8> {
        let mut f = begin_request(RequestHeader { api_key: 3, api_version: 1, correlation_id: 9 });
        f.extend_from_slice(payload);
        finish_frame(&mut f);
        f
    }

    #[test]
    fn incomplete_complete_and_split() {
        let f = request(b"abc");
        for cut in 0..f.len() {
            assert!(matches!(check_request(&f[..cut], 1024), Ok(Check::Incomplete { .. })));
        }
        let mut two = f.clone();
        two.extend_from_slice(&f);
        assert_eq!(check_request(&two, 1024), Ok(Check::Complete { frame_bytes: f.len() }));
        let (h, p) = split_request(&f);
        assert_eq!(h, RequestHeader { api_key: 3, api_version: 1, correlation_id: 9 });
        assert_eq!(p, b"abc");
    }

    #[test]
    fn oversized_and_short_frames_are_refused_before_buffering() {
        let f = request(&[0; 100]);
        match check_request(&f[..12], 50) {
            Err(FrameError::TooLarge { correlation_id: Some(9), .. }) => {}
            other => panic!("{other:?}"),
        }
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(check_request(&huge, 1 << 20), Err(FrameError::TooLarge { .. })));
        let short = [3, 0, 0, 0, 1, 2, 3];
        assert!(matches!(check_request(&short, 1024), Err(FrameError::TooShort { .. })));
    }

    #[test]
    fn response_round_trip() {
        let mut f = begin_response(77, ErrorCode::UNKNOWN_TOPIC);
        f.extend_from_slice(b"xy");
        finish_frame(&mut f);
        assert_eq!(check_response(&f, 64), Ok(Check::Complete { frame_bytes: f.len() }));
        let (h, p) = split_response(&f);
        assert_eq!(h.correlation_id, 77);
        assert_eq!(h.error_code, ErrorCode::UNKNOWN_TOPIC as u16);
        assert_eq!(p, b"xy");
    }
}
