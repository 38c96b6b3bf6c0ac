//! TTY frames come from any WebSocket client (and status frames from any broker).
#![no_main]
use deis_core::tty::channel::{Frame, Protocol, decode, encode, parse_status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for version in [Protocol::V4, Protocol::V5] {
        // Never panics; whatever decodes re-encodes to a message that decodes the same,
        // byte for byte except resize JSON (whose spacing and key order may differ).
        if let Ok(frame) = decode(data, version) {
            let again = encode(&frame);
            if !matches!(frame, Frame::Resize(_)) {
                assert_eq!(again, data);
            }
            assert_eq!(decode(&again, version).unwrap(), frame);
        }
    }
    let _ = parse_status(data);
});
