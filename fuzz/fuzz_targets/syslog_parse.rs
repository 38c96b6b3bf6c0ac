//! Syslog parsing: `parse` never panics on any bytes, mapping to a log line never
//! panics, and a message parsed as RFC 5424 re-formats and re-parses to the same fields;
//! structured-data parameters are read from any input, and drain output counts hops.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use deis_core::logs::syslog::{self, SyslogFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let received = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let msg = syslog::parse(data, received);
    let line = syslog::to_log_line(&msg);
    assert!(line.message.len() <= deis_core::logs::MAX_MESSAGE_BYTES);
    if msg.raw {
        assert_eq!(msg.format, SyslogFormat::Unknown);
    }
    if msg.format == SyslogFormat::Rfc5424 {
        let again = syslog::parse(&msg.to_rfc5424(), received);
        assert_eq!(again, msg);
    }
    // The platform's parameters (hop, origin, ingest token) are found in any message.
    let params = msg.deis_params();
    assert_eq!(line.hops, if msg.raw { 0 } else { params.hop });
    // Drain output of any line parses back to the same app and message, one hop more.
    let out = syslog::format_rfc5424(&line, "host", "origin");
    let back = syslog::parse(&out, received);
    assert_eq!(back.format, SyslogFormat::Rfc5424);
    assert_eq!(back.message, line.message.trim_end_matches(['\n', '\r', '\0']));
    let again = back.deis_params();
    assert_eq!((again.hop, again.origin.as_deref()), (line.hops.saturating_add(1), Some("origin")));
});
