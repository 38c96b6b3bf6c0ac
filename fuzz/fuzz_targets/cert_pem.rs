//! Certificates and keys come from API requests (`deis certs:add`): checking and
//! reading them never panics, whatever the bytes. The input is split at the first NUL
//! into the PEM chain and the PEM key; a raw DER leaf wrapped in a PEM block is tried
//! too, so the X.509 parser sees arbitrary bytes, not just base64 failures.
#![no_main]
use deis_sdk::certs::inspect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (chain, key) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let chain = String::from_utf8_lossy(chain);
    let key = String::from_utf8_lossy(key);
    if let Ok(got) = inspect(&chain, &key) {
        assert!(!got.key.cert.is_empty(), "an accepted chain has a leaf");
        assert_eq!(got.info.fingerprint.len(), 32 * 3 - 1, "a SHA-256 fingerprint");
    }
    let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", b64(data));
    let _ = inspect(&pem, &key);
});

/// Standard base64 (no dependency for one loop).
fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
