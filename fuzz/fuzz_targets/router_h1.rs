//! The router's HTTP/1.1 backend codec (`deis_sdk::router::h1`), fed hostile bytes:
//! response heads never panic and consume exactly the head; a chunked body decodes to
//! the same data and outcome however the stream is cut into reads; a request the
//! router forwards (rebuilt from any parseable request) is a well-formed HTTP/1.1 head
//! without hop-by-hop fields.

#![no_main]

use bytes::BytesMut;
use deis_sdk::router::h1::{self, ChunkedDecoder, Decoded, Forwarding, Framing, RequestFraming};
use http::{HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

/// Decodes `stream` as a chunked body fed in pieces of the sizes `cuts` gives:
/// the data, and whether it ended (`Some(true)`), failed (`Some(false)`) or wants more.
fn decode_chunked(stream: &[u8], mut cut: impl FnMut() -> usize) -> (Vec<u8>, Option<bool>) {
    let (mut dec, mut buf, mut data) = (ChunkedDecoder::new(), BytesMut::new(), Vec::new());
    let mut rest = stream;
    loop {
        match dec.decode(&mut buf) {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty());
                data.extend_from_slice(&d);
            }
            Ok(Decoded::Done) => return (data, Some(true)),
            Err(_) => return (data, Some(false)),
            Ok(Decoded::NeedMore) => {
                if rest.is_empty() {
                    return (data, None);
                }
                let n = cut().clamp(1, rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [mode, seed, bytes @ ..] = input else { return };
    match mode % 3 {
        0 => {
            let method = if seed & 1 == 0 { Method::GET } else { Method::HEAD };
            let mut buf = BytesMut::from(bytes);
            if let Ok(Some(head)) = h1::parse_response_head(&mut buf, &method) {
                assert!(buf.len() < bytes.len());
                assert!(head.headers.len() <= h1::MAX_HEADERS);
                if method == Method::HEAD {
                    assert_eq!(head.framing, Framing::Empty);
                }
                if head.framing == Framing::UntilClose {
                    assert!(!head.keep_alive);
                }
            }
        }
        1 => {
            let whole = decode_chunked(bytes, || usize::MAX);
            let mut state = u32::from(*seed) | 0x100;
            let pieces = decode_chunked(bytes, || {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as usize % 7 + 1
            });
            assert_eq!(whole, pieces);
        }
        _ => {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut fields);
            let Ok(httparse::Status::Complete(_)) = req.parse(bytes) else { return };
            let mut builder = http::Request::builder()
                .method(req.method.unwrap_or("GET"))
                .uri(req.path.unwrap_or("/"));
            for h in req.headers.iter() {
                builder = builder.header(h.name, h.value);
            }
            let Ok(parsed) = builder.body(()) else { return };
            let (parts, ()) = parsed.into_parts();
            let ip = HeaderValue::from_static("10.1.2.3");
            let framing = [RequestFraming::Empty, RequestFraming::Length, RequestFraming::Chunked][usize::from(*seed % 3)];
            let mut out = Vec::new();
            h1::encode_request_head(&mut out, &parts, &Forwarding { client_ip: &ip, trusted: false, upgrade: None, framing });
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut again = httparse::Request::new(&mut fields);
            assert_eq!(again.parse(&out), Ok(httparse::Status::Complete(out.len())), "{:?}", String::from_utf8_lossy(&out));
            assert_eq!(again.method, Some(parts.method.as_str()));
            for h in again.headers.iter() {
                let name = h.name.to_ascii_lowercase();
                assert!(!["connection", "keep-alive", "upgrade", "te", "trailer", "expect"].contains(&name.as_str()));
                if name == "transfer-encoding" {
                    assert_eq!(framing, RequestFraming::Chunked);
                    assert_eq!(h.value, b"chunked");
                }
            }
        }
    }
});
