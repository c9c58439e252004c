//! The client frame parser: the first byte picks the connection's encoding (JSON text or
//! MessagePack binary), the rest is one client message. Parsing never panics, and a frame it
//! accepts is a valid one.
#![no_main]

use holdfast_protocol::{parse_client_message, Encoding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let encoding = if pick & 1 == 0 {
        Encoding::Json
    } else {
        Encoding::MsgPack
    };
    if let Ok(frame) = parse_client_message(encoding, bytes) {
        assert!(frame.validate().is_ok(), "accepted an invalid frame");
    }
});
