//! RocketMQ 4.x "remoting" frames: the codec every RocketMQ client speaks to name servers and
//! brokers.
//!
//! ```text
//! i32 total_length          bytes after this field (big-endian, like every integer here)
//! i32 header_info           serialize type in the high byte, header length in the low 24 bits
//! ... header                JSON (type 0) or RocketMQ binary (type 1)
//! ... body                  total_length - 4 - header length bytes, opaque to the codec
//! ```
//!
//! The header carries `code` (request code, or response code in a response), `language`,
//! `version`, `opaque` (the request id a response echoes), `flag` (bit 0: response, bit 1:
//! oneway), `remark` and `extFields` (string to string: the request's custom header).
//!
//! Binary ("ROCKETMQ") header: `i16 code | u8 language | i16 version | i32 opaque | i32 flag |
//! i32 remark_len, remark | i32 ext_len, ext_len bytes of (i16 key_len, key, i32 value_len,
//! value)`. A zero length means absent.
//!
//! A response is written in the serialize type of its request: the C++ client (and the
//! Python client built on it) reads the whole `header_info` as the header length, so it only
//! understands type 0, which is what it sends. Every extension field is written as a JSON
//! string (older C++ clients fail on numbers there); `code`, `version`, `opaque` and `flag`
//! stay numbers, which every client reads as integers.
//!
//! Decoding reads bytes from the network: [`frame_length`] bounds a frame before anything is
//! buffered, and [`decode`] checks every length against what is there, so hostile input is an
//! error, never a panic or an unbounded allocation (fuzzed by
//! `fuzz/fuzz_targets/remoting_decode.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// RocketMQ's default `com.rocketmq.remoting.frameMaxLength` (16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Flag bit 0: the command is a response.
pub const FLAG_RESPONSE: i32 = 1;
/// Flag bit 1: the request wants no response.
pub const FLAG_ONEWAY: i32 = 1 << 1;

/// Response codes shared by every request (`RemotingSysResponseCode`).
pub mod sys_code {
    pub const SUCCESS: i32 = 0;
    pub const SYSTEM_ERROR: i32 = 1;
    pub const SYSTEM_BUSY: i32 = 2;
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    pub const TRANSACTION_FAILED: i32 = 4;
}

/// How a header is serialized (the high byte of `header_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerializeType {
    Json = 0,
    RocketMq = 1,
}

/// The languages clients announce (`LanguageCode`), by their binary code and JSON name.
const LANGUAGES: &[(u8, &str)] = &[
    (0, "JAVA"),
    (1, "CPP"),
    (2, "DOTNET"),
    (3, "PYTHON"),
    (4, "DELPHI"),
    (5, "ERLANG"),
    (6, "RUBY"),
    (7, "OTHER"),
    (8, "HTTP"),
    (9, "GO"),
    (10, "PHP"),
    (11, "OMS"),
    (12, "RUST"),
    (13, "NODE_JS"),
];
/// `OTHER`, for names and codes this table does not know.
const LANGUAGE_OTHER: u8 = 7;
/// What ringmq announces in the commands it writes.
pub const LANGUAGE_RUST: u8 = 12;

fn language_name(code: u8) -> &'static str {
    LANGUAGES.iter().find(|(c, _)| *c == code).map_or("OTHER", |(_, n)| n)
}

fn language_code(name: &str) -> u8 {
    LANGUAGES.iter().find(|(_, n)| *n == name).map_or(LANGUAGE_OTHER, |(c, _)| *c)
}

/// One remoting command (request or response).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemotingCommand {
    pub code: i32,
    /// A `LanguageCode` (unknown names and codes read as `OTHER`).
    pub language: u8,
    pub version: i32,
    pub opaque: i32,
    pub flag: i32,
    pub remark: Option<String>,
    pub ext_fields: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl RemotingCommand {
    /// A request with `code`, announced as ringmq's language.
    pub fn request(code: i32, opaque: i32) -> Self {
        RemotingCommand { code, language: LANGUAGE_RUST, opaque, ..Default::default() }
    }

    /// The response to `request` with `code` (a response code) and an optional remark.
    pub fn response_to(request: &RemotingCommand, code: i32, remark: Option<String>) -> Self {
        RemotingCommand {
            code,
            language: LANGUAGE_RUST,
            version: request.version,
            opaque: request.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ..Default::default()
        }
    }

    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// An extension field (a custom header field), if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.ext_fields.get(name).map(String::as_str)
    }

    /// Sets an extension field.
    pub fn set_field(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.ext_fields.insert(name.to_string(), value.to_string());
        self
    }
}

/// Why bytes are not a remoting frame. Each variant says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame length {length} is outside [4, {max}]")]
    BadFrameLength { length: i64, max: usize },
    #[error("frame is truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("header length {header} exceeds the frame's {available} bytes")]
    BadHeaderLength { header: usize, available: usize },
    #[error("unknown serialize type {0} (0 is JSON, 1 is ROCKETMQ)")]
    UnknownSerializeType(u8),
    #[error("JSON header does not decode: {0}")]
    BadJson(String),
    #[error("binary header is malformed: {0}")]
    BadBinary(&'static str),
}

/// The bytes the frame at the start of `buf` takes (its length field included), once its
/// length field is there: `Ok(None)` until 4 bytes arrived, an error when the frame is outside
/// `[8, 4 + max_frame_bytes]` (the connection should be closed: the stream has lost its
/// framing).
pub fn frame_length(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, DecodeError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let length = i32::from_be_bytes(len.try_into().expect("4 bytes"));
    if length < 4 || length as usize > max_frame_bytes {
        return Err(DecodeError::BadFrameLength { length: length.into(), max: max_frame_bytes });
    }
    Ok(Some(4 + length as usize))
}

/// Decodes one whole frame (length field included, as [`frame_length`] measured it).
pub fn decode(frame: &[u8]) -> Result<(RemotingCommand, SerializeType), DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Truncated { needed: 8, have: frame.len() });
    }
    let length = i32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
    if length < 4 || length as usize != frame.len() - 4 {
        return Err(DecodeError::BadFrameLength { length: length.into(), max: frame.len() - 4 });
    }
    let info = u32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
    let header_len = (info & 0x00FF_FFFF) as usize;
    let rest = &frame[8..];
    if header_len > rest.len() {
        return Err(DecodeError::BadHeaderLength { header: header_len, available: rest.len() });
    }
    let (header, body) = rest.split_at(header_len);
    let (mut cmd, ty) = match (info >> 24) as u8 {
        0 => (decode_json(header)?, SerializeType::Json),
        1 => (decode_binary(header)?, SerializeType::RocketMq),
        t => return Err(DecodeError::UnknownSerializeType(t)),
    };
    cmd.body = body.to_vec();
    Ok((cmd, ty))
}

/// Encodes `cmd` as one frame with its header in `ty`.
pub fn encode(cmd: &RemotingCommand, ty: SerializeType) -> Vec<u8> {
    let header = match ty {
        SerializeType::Json => encode_json(cmd),
        SerializeType::RocketMq => encode_binary(cmd),
    };
    assert!(header.len() <= 0x00FF_FFFF, "a remoting header is at most 16 MiB");
    let mut out = Vec::with_capacity(8 + header.len() + cmd.body.len());
    out.extend_from_slice(&((4 + header.len() + cmd.body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(((ty as u32) << 24) | header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&cmd.body);
    out
}

#[derive(Serialize, Deserialize)]
struct JsonHeader {
    code: i32,
    #[serde(default)]
    language: serde_json::Value,
    #[serde(default)]
    version: i32,
    #[serde(default)]
    opaque: i32,
    #[serde(default)]
    flag: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remark: Option<String>,
    #[serde(rename = "extFields", default, skip_serializing_if = "Option::is_none")]
    ext_fields: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "serializeTypeCurrentRPC", default, skip_deserializing)]
    serialize_type: &'static str,
}

fn decode_json(header: &[u8]) -> Result<RemotingCommand, DecodeError> {
    let h: JsonHeader =
        serde_json::from_slice(header).map_err(|e| DecodeError::BadJson(e.to_string()))?;
    let language = match &h.language {
        serde_json::Value::String(name) => language_code(name),
        // Unknown codes read as OTHER, as in the binary header (what re-encoding writes).
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|c| u8::try_from(c).ok())
            .filter(|c| LANGUAGES.iter().any(|(l, _)| l == c))
            .unwrap_or(LANGUAGE_OTHER),
        _ => LANGUAGE_OTHER,
    };
    let mut ext_fields = BTreeMap::new();
    for (k, v) in h.ext_fields.unwrap_or_default() {
        // Clients write strings; accept numbers and booleans as their text, skip nulls (the
        // C++ client sends empty credentials) and refuse nested values.
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            _ => return Err(DecodeError::BadJson(format!("extFields.{k} is not a string"))),
        };
        ext_fields.insert(k, text);
    }
    Ok(RemotingCommand {
        code: h.code,
        language,
        version: h.version,
        opaque: h.opaque,
        flag: h.flag,
        remark: h.remark,
        ext_fields,
        body: Vec::new(),
    })
}

fn encode_json(cmd: &RemotingCommand) -> Vec<u8> {
    let h = JsonHeader {
        code: cmd.code,
        language: serde_json::Value::String(language_name(cmd.language).to_string()),
        version: cmd.version,
        opaque: cmd.opaque,
        flag: cmd.flag,
        remark: cmd.remark.clone(),
        ext_fields: Some(
            cmd.ext_fields
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        ),
        serialize_type: "JSON",
    };
    serde_json::to_vec(&h).expect("a JSON header always serializes")
}

/// A cursor over a binary header that never reads past its end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError::BadBinary(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn string(&mut self, len: usize, what: &'static str) -> Result<String, DecodeError> {
        String::from_utf8(self.take(len, what)?.to_vec()).map_err(|_| DecodeError::BadBinary(what))
    }
    fn length(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        usize::try_from(self.i32(what)?).map_err(|_| DecodeError::BadBinary(what))
    }
}

fn decode_binary(header: &[u8]) -> Result<RemotingCommand, DecodeError> {
    let mut c = Cursor { rest: header };
    let code = c.i16("code")?.into();
    let language = c.take(1, "language")?[0];
    let language =
        if LANGUAGES.iter().any(|(l, _)| *l == language) { language } else { LANGUAGE_OTHER };
    let version = c.i16("version")?.into();
    let opaque = c.i32("opaque")?;
    let flag = c.i32("flag")?;
    let remark_len = c.length("remark length")?;
    let remark = if remark_len == 0 { None } else { Some(c.string(remark_len, "remark")?) };
    let ext_len = c.length("extFields length")?;
    let mut ext = Cursor { rest: c.take(ext_len, "extFields")? };
    let mut ext_fields = BTreeMap::new();
    while !ext.rest.is_empty() {
        let key_len = usize::try_from(ext.i16("extFields key length")?)
            .map_err(|_| DecodeError::BadBinary("extFields key length"))?;
        let key = ext.string(key_len, "extFields key")?;
        let value_len = ext.length("extFields value length")?;
        let value = ext.string(value_len, "extFields value")?;
        ext_fields.insert(key, value);
    }
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: Vec::new(),
    })
}

fn encode_binary(cmd: &RemotingCommand) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&(cmd.code as i16).to_be_bytes());
    b.push(cmd.language);
    b.extend_from_slice(&(cmd.version as i16).to_be_bytes());
    b.extend_from_slice(&cmd.opaque.to_be_bytes());
    b.extend_from_slice(&cmd.flag.to_be_bytes());
    let remark = cmd.remark.as_deref().unwrap_or("");
    b.extend_from_slice(&(remark.len() as i32).to_be_bytes());
    b.extend_from_slice(remark.as_bytes());
    let mut ext = Vec::new();
    for (k, v) in &cmd.ext_fields {
        ext.extend_from_slice(&(k.len() as i16).to_be_bytes());
        ext.extend_from_slice(k.as_bytes());
        ext.extend_from_slice(&(v.len() as i32).to_be_bytes());
        ext.extend_from_slice(v.as_bytes());
    }
    b.extend_from_slice(&(ext.len() as i32).to_be_bytes());
    b.extend_from_slice(&ext);
    b
}

#[cfg(test)]
mod tests;
