//! Feeds arbitrary bytes to the RocketMQ front's body and header readers that see network
//! bytes after the codec: batch send bodies (`translate::decode_batch`), heartbeat JSON
//! (`bodies::parse_heartbeat`), the property string (`stored::decode_properties`) and the
//! send/pull headers (`headers`). None may panic; a batch that decodes holds every byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::compat::rocketmq::codec::RemotingCommand;
use ringmq::compat::rocketmq::{bodies, headers, stored, translate};

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = translate::decode_batch(data) {
        let held: usize = msgs.iter().map(|m| m.body.len()).sum();
        assert!(held <= data.len());
        for m in &msgs {
            let _ = m.to_record();
        }
    }
    let _ = bodies::parse_heartbeat(data);
    let text = String::from_utf8_lossy(data);
    let props = stored::decode_properties(&text);
    let mut cmd = RemotingCommand::request(310, 1);
    for (k, v) in props.iter().take(32) {
        cmd.set_field(k, v);
    }
    let _ = headers::SendHeader::read(&cmd);
    let _ = headers::PullHeader::read(&cmd);
    let _ = headers::QueueHeader::read(&cmd);
    let _ = translate::parse_tag_expression(&text);
});
