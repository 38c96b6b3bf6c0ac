//! TCP framing: decoding a stream cut into arbitrary chunks gives exactly the frames
//! and errors of decoding it in one piece, never panics, and buffers boundedly.

#![no_main]

use deis_core::logs::syslog::{FrameDecoder, FrameError};
use libfuzzer_sys::fuzz_target;

fn drain(d: &mut FrameDecoder, out: &mut Vec<Result<Vec<u8>, FrameError>>) {
    while let Some(r) = d.next_frame() {
        out.push(r.map(<[u8]>::to_vec));
    }
}

fuzz_target!(|input: &[u8]| {
    // First byte: frame limit; next two: chunking seed; the rest: the stream.
    let [max, seed_a, seed_b, stream @ ..] = input else { return };
    let max = usize::from(*max) + 1;
    let mut whole = Vec::new();
    let mut d = FrameDecoder::new(max);
    d.push(stream);
    drain(&mut d, &mut whole);
    whole.extend(d.finish().map(|r| r.map(<[u8]>::to_vec)));

    let mut chunked = Vec::new();
    let mut d = FrameDecoder::new(max);
    let mut rest = stream;
    let mut state = u32::from(*seed_a) << 8 | u32::from(*seed_b) | 1;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % 17).min(rest.len());
        d.push(&rest[..n]);
        rest = &rest[n..];
        drain(&mut d, &mut chunked);
        assert!(d.buffered() <= max + 17, "buffered {} with max {max}", d.buffered());
    }
    chunked.extend(d.finish().map(|r| r.map(<[u8]>::to_vec)));
    assert_eq!(chunked, whole);
    for f in whole.iter().flatten() {
        assert!(f.len() <= max);
    }
});
