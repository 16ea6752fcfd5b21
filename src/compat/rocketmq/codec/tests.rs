use super::*;
use proptest::prelude::*;

/// A JSON frame as the C++ client (and so the Python client) writes it: `header_info` is the
/// plain header length (type 0), credentials are empty strings, numbers are numbers.
fn cpp_send_request() -> Vec<u8> {
    let header = br#"{"code":310,"extFields":{"AccessKey":"","ONSChannelKey":"","Signature":"","a":"pg","b":"orders","c":"TBW102","d":"4","e":"1","f":"0","g":"1700000000000","h":"0","i":"KEYS\u0001k1\u0002TAGS\u0001A\u0002","j":"0","k":"false","m":"false"},"flag":0,"language":"CPP","opaque":7,"remark":"","version":405}"#;
    let body = b"hello";
    let mut f = Vec::new();
    f.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
    f.extend_from_slice(&(header.len() as u32).to_be_bytes());
    f.extend_from_slice(header);
    f.extend_from_slice(body);
    f
}

/// A binary ("ROCKETMQ") frame as Java's `RocketMQSerializable` writes it, byte by byte.
fn java_binary_request() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&105i16.to_be_bytes()); // GET_ROUTEINFO_BY_TOPIC
    h.push(0); // JAVA
    h.extend_from_slice(&453i16.to_be_bytes()); // version
    h.extend_from_slice(&42i32.to_be_bytes()); // opaque
    h.extend_from_slice(&0i32.to_be_bytes()); // flag
    h.extend_from_slice(&0i32.to_be_bytes()); // no remark
    let mut ext = Vec::new();
    ext.extend_from_slice(&5i16.to_be_bytes());
    ext.extend_from_slice(b"topic");
    ext.extend_from_slice(&6i32.to_be_bytes());
    ext.extend_from_slice(b"orders");
    h.extend_from_slice(&(ext.len() as i32).to_be_bytes());
    h.extend_from_slice(&ext);
    let mut f = Vec::new();
    f.extend_from_slice(&((4 + h.len()) as u32).to_be_bytes());
    f.extend_from_slice(&((1u32 << 24) | h.len() as u32).to_be_bytes());
    f.extend_from_slice(&h);
    f
}

#[test]
fn a_cpp_client_request_decodes_with_its_fields_and_body() {
    let frame = cpp_send_request();
    assert_eq!(frame_length(&frame, DEFAULT_MAX_FRAME_BYTES), Ok(Some(frame.len())));
    let (cmd, ty) = decode(&frame).unwrap();
    assert_eq!(ty, SerializeType::Json);
    assert_eq!((cmd.code, cmd.language, cmd.version, cmd.opaque), (310, 1, 405, 7));
    assert!(!cmd.is_response() && !cmd.is_oneway());
    assert_eq!(cmd.field("b"), Some("orders"));
    assert_eq!(cmd.field("i"), Some("KEYS\u{1}k1\u{2}TAGS\u{1}A\u{2}"));
    assert_eq!(cmd.field("Signature"), Some(""));
    assert_eq!(cmd.remark.as_deref(), Some(""));
    assert_eq!(cmd.body, b"hello");
}

#[test]
fn a_java_binary_request_decodes_and_its_response_is_binary_too() {
    let (cmd, ty) = decode(&java_binary_request()).unwrap();
    assert_eq!(ty, SerializeType::RocketMq);
    assert_eq!((cmd.code, cmd.language, cmd.version, cmd.opaque), (105, 0, 453, 42));
    assert_eq!(cmd.remark, None);
    assert_eq!(cmd.field("topic"), Some("orders"));

    let mut resp = RemotingCommand::response_to(&cmd, sys_code::SUCCESS, None);
    resp.body = b"{}".to_vec();
    let bytes = encode(&resp, ty);
    let mut expected = Vec::new();
    let header: &[u8] = &[
        0, 0,  // code
        12, // RUST
        0x01, 0xC5, // version 453
        0, 0, 0, 42, // opaque
        0, 0, 0, 1, // flag: response
        0, 0, 0, 0, // no remark
        0, 0, 0, 0, // no extFields
    ];
    expected.extend_from_slice(&((4 + header.len() + 2) as u32).to_be_bytes());
    expected.extend_from_slice(&((1u32 << 24) | header.len() as u32).to_be_bytes());
    expected.extend_from_slice(header);
    expected.extend_from_slice(b"{}");
    assert_eq!(bytes, expected);
}

#[test]
fn json_responses_write_extension_fields_as_strings_and_the_plain_header_length() {
    let (req, ty) = decode(&cpp_send_request()).unwrap();
    let mut resp = RemotingCommand::response_to(&req, sys_code::SUCCESS, Some("ok".into()));
    resp.set_field("queueId", 3).set_field("queueOffset", 1234567890123u64);
    let bytes = encode(&resp, ty);
    let header_len = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(header_len, bytes.len() - 8, "type 0: the C++ client reads this as the length");
    let json: serde_json::Value = serde_json::from_slice(&bytes[8..]).unwrap();
    assert_eq!(json["code"], 0);
    assert_eq!(json["opaque"], 7);
    assert_eq!(json["flag"], 1);
    assert_eq!(json["language"], "RUST");
    assert_eq!(json["remark"], "ok");
    assert_eq!(json["extFields"]["queueId"], "3");
    assert_eq!(json["extFields"]["queueOffset"], "1234567890123");
    assert_eq!(json["serializeTypeCurrentRPC"], "JSON");
}

#[test]
fn numbers_and_nulls_in_extension_fields_are_tolerated_nested_values_are_not() {
    let frame = |header: &str| {
        let mut f = Vec::new();
        f.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
        f.extend_from_slice(&(header.len() as u32).to_be_bytes());
        f.extend_from_slice(header.as_bytes());
        f
    };
    let (cmd, _) =
        decode(&frame(r#"{"code":34,"opaque":1,"flag":2,"extFields":{"n":5,"b":true,"x":null}}"#))
            .unwrap();
    assert!(cmd.is_oneway());
    assert_eq!(cmd.field("n"), Some("5"));
    assert_eq!(cmd.field("b"), Some("true"));
    assert_eq!(cmd.field("x"), None);
    assert_eq!(cmd.language, LANGUAGE_OTHER, "no language: OTHER");
    assert!(matches!(
        decode(&frame(r#"{"code":34,"extFields":{"n":[1]}}"#)),
        Err(DecodeError::BadJson(_))
    ));
    assert!(matches!(decode(&frame(r#"{"opaque":1}"#)), Err(DecodeError::BadJson(_))));
}

/// Found by the fuzzer: a header in JSON's array form with an unknown numeric language
/// re-encoded as `OTHER`, so the command did not survive a round trip.
#[test]
fn unknown_numeric_languages_read_as_other() {
    let frame = |header: &[u8], body: &[u8]| {
        let mut f = Vec::new();
        f.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
        f.extend_from_slice(&(header.len() as u32).to_be_bytes());
        f.extend_from_slice(header);
        f.extend_from_slice(body);
        f
    };
    let (cmd, ty) = decode(&frame(b"[63,80]", &[13])).unwrap();
    assert_eq!((cmd.code, cmd.language), (63, LANGUAGE_OTHER));
    assert_eq!(decode(&encode(&cmd, ty)).unwrap().0, cmd);
    let (known, _) = decode(&frame(br#"{"code":1,"language":3}"#, b"")).unwrap();
    assert_eq!(known.language, 3, "PYTHON by its code");
}

#[test]
fn framing_errors_are_named() {
    assert_eq!(frame_length(&[0, 0, 0], 100), Ok(None));
    assert!(matches!(frame_length(&[0, 0, 0, 3], 100), Err(DecodeError::BadFrameLength { .. })));
    assert!(matches!(frame_length(&[0xFF, 0, 0, 0], 100), Err(DecodeError::BadFrameLength { .. })));
    assert!(matches!(frame_length(&[0, 0, 0, 101], 100), Err(DecodeError::BadFrameLength { .. })));
    let mut f = java_binary_request();
    f[4] = 2;
    assert_eq!(decode(&f), Err(DecodeError::UnknownSerializeType(2)));
    let mut f = java_binary_request();
    f[7] = 0xFF;
    assert!(matches!(decode(&f), Err(DecodeError::BadHeaderLength { .. })));
    let f = java_binary_request();
    assert!(matches!(decode(&f[..f.len() - 1]), Err(DecodeError::BadFrameLength { .. })));
}

fn command() -> impl Strategy<Value = RemotingCommand> {
    (
        any::<i16>(),
        0u8..14,
        any::<i16>(),
        any::<i32>(),
        0i32..4,
        proptest::option::of("[a-z ]{1,12}"),
        proptest::collection::btree_map("[a-zA-Z]{1,8}", "[ -~]{0,12}", 0..6),
        proptest::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(code, language, version, opaque, flag, remark, ext_fields, body)| {
            RemotingCommand {
                code: code.into(),
                language,
                version: version.into(),
                opaque,
                flag,
                remark,
                ext_fields,
                body,
            }
        })
}

proptest! {
    #[test]
    fn commands_round_trip_in_both_serialize_types(cmd in command()) {
        for ty in [SerializeType::Json, SerializeType::RocketMq] {
            let bytes = encode(&cmd, ty);
            prop_assert_eq!(frame_length(&bytes, DEFAULT_MAX_FRAME_BYTES), Ok(Some(bytes.len())));
            let (back, back_ty) = decode(&bytes).unwrap();
            prop_assert_eq!(back_ty, ty);
            prop_assert_eq!(&back, &cmd);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = frame_length(&bytes, 1024);
        let _ = decode(&bytes);
    }

    #[test]
    fn damaged_frames_never_panic(cmd in command(), at in any::<usize>(), bit in 0u8..8) {
        for ty in [SerializeType::Json, SerializeType::RocketMq] {
            let mut bytes = encode(&cmd, ty);
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
            let _ = decode(&bytes);
        }
    }
}
