//! Feeds arbitrary bytes to the RocketMQ remoting codec (`frame_length`, `decode`), which the
//! RocketMQ front runs on bytes from the network. It must never panic, and a command it
//! accepts must survive an encode and decode in the same serialize type unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::compat::rocketmq::codec::{decode, encode, frame_length};

fuzz_target!(|data: &[u8]| {
    let _ = frame_length(data, 1 << 16);
    if let Ok((cmd, ty)) = decode(data) {
        let (again, again_ty) = decode(&encode(&cmd, ty)).expect("re-encoded command decodes");
        assert_eq!(again_ty, ty);
        assert_eq!(again, cmd, "encode then decode must give the same command");
    }
});
