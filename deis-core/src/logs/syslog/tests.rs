use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

/// 2026-11-25T16:00:00Z, the receive time of the captures.
fn received() -> SystemTime {
    civil::parse_rfc3339(b"2026-11-25T16:00:00Z").unwrap()
}

fn ts(s: &str) -> SystemTime {
    civil::parse_rfc3339(s.as_bytes()).unwrap()
}

// Captured on the wire: Docker's syslog driver formats from docs/PROTOCOLS.md (srslog puts
// the LF inside the counted length over TLS); util-linux `logger` captured on this machine.
const DOCKER_5424: &[u8] = b"<30>1 2026-11-25T14:47:21Z vm myapp 2905 myapp - line one\n";
const DOCKER_5424_STDERR: &[u8] = b"<27>1 2026-11-25T14:47:21+01:00 vm hello.web.1 2905 hello.web.1 - oops\n";
const DOCKER_5424_MICRO: &[u8] = b"<30>1 2026-11-25T14:47:21.123456Z vm myapp 2905 myapp - line one\n";
const DOCKER_3164: &[u8] = b"<27>Nov 25 14:47:26 vm myapp[2905]: line two\n";
const DOCKER_TLS_FRAMED: &[u8] = b"58 <30>1 2026-11-25T14:47:21Z vm myapp 2905 myapp - line one\n";
const DOCKER_UDP_NAME_ID: &[u8] =
    b"<30>1 2026-11-25T14:47:21Z vm hello.web.1/3f4e8a9b2c1d 2905 hello.web.1/3f4e8a9b2c1d - via udp\n";
const LOGGER_5424_TCP: &[u8] =
    b"93 <13>1 2026-11-25T16:23:37.171997+00:00 vm myapp - - [timeQuality tzKnown=\"1\" isSynced=\"0\"] hi";
const LOGGER_5424_UDP: &[u8] =
    b"<13>1 2026-11-25T16:23:40.212494+00:00 vm myapp - - [timeQuality tzKnown=\"1\" isSynced=\"0\"] hi udp";
const LOGGER_3164_UDP: &[u8] = b"<13>Nov 25 16:23:40 vm myapp: hi 3164";
const LOGGER_5424_LF: &[u8] =
    b"<13>1 2026-11-25T16:23:44.232002+00:00 vm hello.web.1 - - [timeQuality tzKnown=\"1\" isSynced=\"0\"] lf framed\n";
const LOGGER_5424_PRI133: &[u8] = b"116 <133>1 2026-11-25T16:23:37.171997+00:00 vm myapp - - [timeQuality tzKnown=\"1\" isSynced=\"0\" syncAccuracy=\"123456\"] hi";

fn frames(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut d = FrameDecoder::new(max);
    d.push(input);
    let mut out = Vec::new();
    while let Some(r) = d.next_frame() {
        out.push(r.map(<[u8]>::to_vec));
    }
    if let Some(r) = d.finish() {
        out.push(r.map(<[u8]>::to_vec));
    }
    out
}

fn one_frame(input: &[u8]) -> Vec<u8> {
    let f = frames(input, 64 * 1024);
    assert_eq!(f.len(), 1, "{f:?}");
    f.into_iter().next().unwrap().unwrap()
}

#[test]
fn docker_rfc5424() {
    let m = parse(DOCKER_5424, received());
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert!(!m.raw);
    assert_eq!((m.facility, m.severity), (3, 6));
    assert_eq!(m.timestamp, Some(ts("2026-11-25T14:47:21Z")));
    assert_eq!(m.hostname.as_deref(), Some("vm"));
    assert_eq!(m.app_name.as_deref(), Some("myapp"));
    assert_eq!(m.procid.as_deref(), Some("2905"));
    assert_eq!(m.msgid.as_deref(), Some("myapp"));
    assert_eq!(m.structured_data, None);
    assert_eq!(m.message, "line one");
    let line = to_log_line(&m);
    assert_eq!(line.app, "myapp");
    assert_eq!(line.source, LogSource::Other { name: "syslog".into() });
    assert_eq!(line.stream, LogStream::Severity(6));
    assert_eq!(line.to_string(), "2026-11-25T14:47:21.000Z myapp[syslog]: line one");
}

#[test]
fn docker_rfc5424_stderr_unit_and_offset() {
    let m = parse(DOCKER_5424_STDERR, received());
    assert_eq!((m.facility, m.severity), (3, 3));
    assert_eq!(m.timestamp, Some(ts("2026-11-25T13:47:21Z")));
    let line = to_log_line(&m);
    assert_eq!(line.app, "hello");
    assert_eq!(line.source, LogSource::App { proc_type: "web".into(), number: 1 });
    assert_eq!(line.stream, LogStream::Severity(3));
    assert_eq!(line.message, "oops");
}

#[test]
fn docker_rfc5424micro() {
    let m = parse(DOCKER_5424_MICRO, received());
    assert_eq!(m.timestamp, Some(ts("2026-11-25T14:47:21Z") + Duration::from_micros(123_456)));
    assert_eq!(m.message, "line one");
}

#[test]
fn docker_rfc3164() {
    let m = parse(DOCKER_3164, received());
    assert_eq!(m.format, SyslogFormat::Rfc3164);
    assert_eq!((m.facility, m.severity), (3, 3));
    assert_eq!(m.timestamp, Some(ts("2026-11-25T14:47:26Z")));
    assert_eq!(m.hostname.as_deref(), Some("vm"));
    assert_eq!(m.app_name.as_deref(), Some("myapp"));
    assert_eq!(m.procid.as_deref(), Some("2905"));
    assert_eq!(m.message, "line two");
    assert_eq!(to_log_line(&m).app, "myapp");
}

#[test]
fn docker_tls_octet_counted() {
    let frame = one_frame(DOCKER_TLS_FRAMED);
    assert_eq!(frame, DOCKER_5424);
    assert_eq!(parse(&frame, received()).message, "line one");
    // Without the LF inside the counted length, and two frames back to back.
    let mut two = octet_frame(&DOCKER_5424[..57]);
    two.extend_from_slice(DOCKER_TLS_FRAMED);
    let f = frames(&two, 1024);
    assert_eq!(f, vec![Ok(DOCKER_5424[..57].to_vec()), Ok(DOCKER_5424.to_vec())]);
}

#[test]
fn docker_name_id_tag() {
    let m = parse(DOCKER_UDP_NAME_ID, received());
    let line = to_log_line(&m);
    assert_eq!(line.app, "hello");
    assert_eq!(line.source, LogSource::App { proc_type: "web".into(), number: 1 });
    assert_eq!(line.message, "via udp");
}

#[test]
fn logger_rfc5424_octet_count_tcp() {
    let frame = one_frame(LOGGER_5424_TCP);
    let m = parse(&frame, received());
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert_eq!((m.facility, m.severity), (1, 5));
    assert_eq!(m.timestamp, Some(ts("2026-11-25T16:23:37.171997Z")));
    assert_eq!(m.procid, None);
    assert_eq!(m.msgid, None);
    assert_eq!(m.structured_data.as_deref(), Some("[timeQuality tzKnown=\"1\" isSynced=\"0\"]"));
    assert_eq!(m.message, "hi");
    assert_eq!(to_log_line(&m).app, "myapp");
    let m = parse(&one_frame(LOGGER_5424_PRI133), received());
    assert_eq!((m.facility, m.severity), (16, 5));
    assert_eq!(m.message, "hi");
}

#[test]
fn logger_udp_and_lf() {
    let m = parse(LOGGER_5424_UDP, received());
    assert_eq!(m.message, "hi udp");
    let m = parse(LOGGER_3164_UDP, received());
    assert_eq!(m.format, SyslogFormat::Rfc3164);
    assert_eq!(m.hostname.as_deref(), Some("vm"));
    assert_eq!(m.app_name.as_deref(), Some("myapp"));
    assert_eq!(m.procid, None);
    assert_eq!(m.message, "hi 3164");
    let f = frames(LOGGER_5424_LF, 1024);
    assert_eq!(f.len(), 1);
    let m = parse(f[0].as_ref().unwrap(), received());
    assert_eq!(m.message, "lf framed");
    assert_eq!(to_log_line(&m).source, LogSource::App { proc_type: "web".into(), number: 1 });
}

#[test]
fn rfc3164_without_hostname_and_year_inference() {
    let m = parse(b"<13>Nov  5 01:02:03 myapp[12]: hello\r\n", received());
    assert_eq!(m.hostname, None);
    assert_eq!(m.app_name.as_deref(), Some("myapp"));
    assert_eq!(m.timestamp, Some(ts("2026-11-05T01:02:03Z")));
    assert_eq!(m.message, "hello");
    // A December message received in January is from last year.
    let jan = ts("2027-01-01T00:00:10Z");
    let m = parse(b"<13>Dec 31 23:59:59 host app: x", jan);
    assert_eq!(m.timestamp, Some(ts("2026-12-31T23:59:59Z")));
    // No timestamp at all: still BSD syslog.
    let m = parse(b"<14>myapp: bare", received());
    assert_eq!(
        (m.format, m.timestamp, m.app_name.as_deref(), m.message.as_str()),
        (SyslogFormat::Rfc3164, None, Some("myapp"), "bare")
    );
    // Host but no tag.
    let m = parse(b"<14>Nov 25 14:47:26 host just text", received());
    assert_eq!((m.hostname.as_deref(), m.app_name.as_deref(), m.message.as_str()), (Some("host"), None, "just text"));
}

#[test]
fn rfc5424_structured_data_escapes_bom_and_nil() {
    let input = b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\\"ic\\]ation\" eventID=\"1011\"][examplePriority@32473 class=\"high\"] \xEF\xBB\xBFAn application event\0";
    let m = parse(input, received());
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert_eq!(m.msgid.as_deref(), Some("ID47"));
    assert_eq!(
        m.structured_data.as_deref(),
        Some(
            "[exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\\"ic\\]ation\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]"
        )
    );
    assert_eq!(m.message, "An application event");
    let m = parse(b"<34>1 - - - - - -", received());
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert_eq!((m.timestamp, m.hostname.clone(), m.message.as_str()), (None, None, ""));
    let m = parse(b"<34>1 - h a p m [sd x=\"1\"]", received());
    assert_eq!((m.structured_data.as_deref(), m.message.as_str()), (Some("[sd x=\"1\"]"), ""));
    // Malformed SD is kept in the message.
    let m = parse(b"<34>1 - h a p m [broken msg", received());
    assert_eq!((m.structured_data.as_deref(), m.message.as_str()), (None, "[broken msg"));
}

#[test]
fn garbage_is_raw() {
    for input in [&b"hello world\n"[..], b"<999>1 x", b"", b"<>", b"\xff\xfe", b"<13"] {
        let m = parse(input, received());
        assert!(m.raw, "{input:?}");
        assert_eq!(m.format, SyslogFormat::Unknown);
        let line = to_log_line(&m);
        assert_eq!(line.app, UNROUTED_APP);
        assert!(line.raw);
        assert_eq!(line.time, received());
    }
    assert_eq!(parse(b"hello world\r\n\0", received()).message, "hello world");
}

#[test]
fn routing() {
    let app = |t: &str| route(t, None);
    let unit = |a: &str, t: &str, n| Some((a.to_string(), LogSource::App { proc_type: t.into(), number: n }));
    assert_eq!(app("hello.web.1"), unit("hello", "web", 1));
    assert_eq!(app("hello_v12.worker-2.3"), unit("hello", "worker-2", 3));
    assert_eq!(app("/hello.web.1/abcdef0123"), unit("hello", "web", 1));
    assert_eq!(app("hello/abcdef"), Some(("hello".into(), LogSource::Other { name: "syslog".into() })));
    assert_eq!(route("hello", Some("web.2")), unit("hello", "web", 2));
    assert_eq!(route("hello", Some("2905")), Some(("hello".into(), LogSource::Other { name: "syslog".into() })));
    for bad in ["deis", "Hello", "CRON", "deis.controller.1", "", "a..1", "hello.web.x", "-x"] {
        assert_eq!(app(bad), None, "{bad}");
    }
    let m = parse(b"<13>Nov 25 16:23:40 vm CRON[1]: job", received());
    let line = to_log_line(&m);
    assert_eq!((line.app.as_str(), line.source), (UNROUTED_APP, LogSource::Other { name: "CRON".into() }));
}

#[test]
fn drain_format() {
    let mut line = LogLine::from_unit("hello", "web", 1, LogStream::Stderr, "boom\n");
    line.time = UNIX_EPOCH + Duration::from_micros(1_764_082_041_123_456);
    let out = format_rfc5424(&line, "deis host", "p1");
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "<11>1 2025-11-25T14:47:21.123456Z deishost hello web.1 - [deis@32473 hop=\"1\" origin=\"p1\"] boom"
    );
    assert_eq!(octet_frame(&out)[..4], *b"94 <");
    let back = to_log_line(&parse(&out, received()));
    assert_eq!(
        (back.app.as_str(), &back.source, back.time, back.message.as_str()),
        ("hello", &line.source, line.time, "boom")
    );
    let p = LogLine::platform("hello", "controller", "release v2 created");
    let out = String::from_utf8(format_rfc5424(&p, "h", "p1")).unwrap();
    assert!(
        out.starts_with("<14>1 ")
            && out.ends_with(" h hello deis controller [deis@32473 hop=\"1\" origin=\"p1\"] release v2 created"),
        "{out}"
    );
    // Platform lines are never forged from syslog.
    assert_eq!(to_log_line(&parse(out.as_bytes(), received())).source, LogSource::Other { name: "syslog".into() });
}

#[test]
fn framing_lf_and_octet() {
    let ok = |s: &[u8]| Ok(s.to_vec());
    assert_eq!(frames(b"a\nb\r\n\n\nc", 10), vec![ok(b"a"), ok(b"b\r"), ok(b"c")]);
    assert_eq!(
        frames(b"short\n0123456789abc\nafter\n", 10),
        vec![ok(b"short"), Err(FrameError::Oversized { max: 10 }), ok(b"after")]
    );
    assert_eq!(frames(b"3 abc4 defg\n2 hi", 10), vec![ok(b"abc"), ok(b"defg"), ok(b"hi")]);
    assert_eq!(
        frames(b"3 abc12 0123456789ab2 ok", 10),
        vec![ok(b"abc"), Err(FrameError::Oversized { max: 10 }), ok(b"ok")]
    );
    let f = frames(b"3 abcx bad", 10);
    assert_eq!(f[0], ok(b"abc"));
    assert!(matches!(&f[1], Err(e @ FrameError::BadLength(_)) if e.is_fatal()), "{f:?}");
    assert_eq!(f.len(), 2);
    assert_eq!(frames(b"5 abc", 10), vec![Err(FrameError::Truncated { expected: 5, got: 3 })]);
    assert!(matches!(frames(b"01 a", 10)[0], Err(FrameError::BadLength(_))));
    assert!(matches!(frames(b"12345678901 a", 10)[0], Err(FrameError::BadLength(_))));
    let mut d = FrameDecoder::new(10);
    d.push(b"<1>");
    assert_eq!(d.framing(), None);
    assert!(d.next_frame().is_none());
    assert_eq!(d.framing(), Some(Framing::NonTransparent));
    // Oversized without LF yet: memory stays bounded while the rest is dropped.
    let mut d = FrameDecoder::new(10);
    for _ in 0..1000 {
        d.push(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        while d.next_frame().is_some() {}
        assert!(d.buffered() <= 10 + 33);
    }
}

fn arb_token() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[!-~]{1,20}".prop_filter("nil", |s| s != "-"))
}

prop_compose! {
    fn arb_5424()(
        fac in 0u8..24, sev in 0u8..8,
        secs in proptest::option::of(0i64..253_402_300_799), nanos in 0u32..1_000_000_000,
        hostname in arb_token(), app_name in arb_token(), procid in arb_token(), msgid in arb_token(),
        sd in proptest::option::of("(\\[[a-z@0-9]{1,8}( [a-z]{1,5}=\"([^\"\\\\\\]]|\\\\[\"\\\\\\]]){0,8}\")*\\]){1,3}"),
        message in "\\PC{0,40}",
    ) -> SyslogMessage {
        SyslogMessage {
            facility: fac, severity: sev,
            timestamp: secs.map(|s| civil::from_unix(s, nanos)),
            received: received(),
            hostname, app_name, procid, msgid, structured_data: sd,
            message: String::from_utf8_lossy(trim_end(message.as_bytes())).into_owned(),
            raw: false, format: SyslogFormat::Rfc5424,
        }
    }
}

proptest! {
    #[test]
    fn rfc5424_roundtrip(m in arb_5424()) {
        let bytes = m.to_rfc5424();
        prop_assert_eq!(parse(&bytes, received()), m);
    }

    #[test]
    fn parse_never_panics_and_reparses(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let m = parse(&bytes, received());
        if m.format == SyslogFormat::Rfc5424 {
            let again = parse(&m.to_rfc5424(), received());
            prop_assert_eq!(again, m.clone());
        }
        let _ = to_log_line(&m);
    }

    #[test]
    fn parse_structured_prefixes(prefix in "<[0-9]{1,3}>(1 )?", rest in "[ -~]{0,80}") {
        let _ = to_log_line(&parse(format!("{prefix}{rest}").as_bytes(), received()));
    }

    #[test]
    fn framing_chunking_invariant(
        msgs in proptest::collection::vec("[ -~]{0,30}", 0..12),
        octet in any::<bool>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..20),
        cuts in proptest::collection::vec(0usize..400, 0..10),
        max in 1usize..40,
    ) {
        let msgs: Vec<String> = if octet { msgs.into_iter().filter(|m| !m.is_empty()).collect() } else { msgs };
        let mut stream = Vec::new();
        for m in &msgs {
            if octet { stream.extend(octet_frame(m.as_bytes())) } else { stream.extend_from_slice(m.as_bytes()); stream.push(b'\n') }
        }
        stream.extend(garbage);
        let whole = frames(&stream, max);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
        cuts.sort_unstable();
        let mut d = FrameDecoder::new(max);
        let mut got = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([stream.len()]) {
            d.push(&stream[at..c]);
            at = c;
            while let Some(r) = d.next_frame() {
                got.push(r.map(<[u8]>::to_vec));
            }
            prop_assert!(d.buffered() <= max + stream.len());
        }
        if let Some(r) = d.finish() {
            got.push(r.map(<[u8]>::to_vec));
        }
        prop_assert_eq!(&got, &whole);
        // Well-formed frames within the limit come out as sent.
        let first_digit = msgs.iter().find(|m| !m.is_empty()).is_some_and(|m| m.as_bytes()[0].is_ascii_digit());
        if octet || !first_digit {
            let expect: Vec<&[u8]> =
                msgs.iter().map(|m| m.as_bytes()).filter(|m| !m.is_empty() && m.len() <= max).collect();
            let oks: Vec<&[u8]> = whole.iter().filter_map(|r| r.as_ref().ok()).map(Vec::as_slice).take(expect.len()).collect();
            prop_assert_eq!(oks, expect);
        }
    }
}

#[test]
fn drains_count_hops_so_loops_end() {
    let line = LogLine::from_unit("hello", "web", 1, LogStream::Stdout, "hi");
    let once = parse(&format_rfc5424(&line, "h", "p1"), received());
    assert_eq!(once.deis_params(), DeisParams { hop: 1, origin: Some("p1".into()), token: None });
    let relayed = to_log_line(&once);
    assert_eq!(relayed.hops, 1);
    let twice = parse(&format_rfc5424(&relayed, "h", "p2\"]"), received());
    assert_eq!(twice.deis_params().hop, 2);
    assert_eq!(twice.deis_params().origin.as_deref(), Some("p2"));
    // Other elements and unknown parameters are passed over; a bad hop counts as none.
    let m = parse(br#"<14>1 - h hello web.1 - [a@1 hop="9" x="\"]"][deis@32473 n="]" hop="x"] hi"#, received());
    assert_eq!(m.deis_params(), DeisParams::default());
    assert_eq!(sd_param(r#"[a@1 x="\"]" y="2"]"#, "a@1", "y"), Some("2"));
    assert_eq!(sd_param(r#"[a@1 x="1"#, "a@1", "x"), None);
}

#[test]
fn ingest_tokens_come_from_structured_data_or_the_tag() {
    let m = parse(br#"<14>1 - h hello.web.1 - - [deis@32473 token="t0k"] hi"#, received());
    assert_eq!(m.deis_params().token.as_deref(), Some("t0k"));
    assert_eq!(to_log_line(&m).app, "hello");
    let m = parse(b"<14>Nov 25 16:23:40 vm hello.web.1/s3cret[7]: hi", received());
    assert_eq!(m.deis_params().token.as_deref(), Some("s3cret"));
    assert_eq!(to_log_line(&m).source, LogSource::App { proc_type: "web".into(), number: 1 });
    let m = parse(b"<14>1 - h hello.web.1 - - - hi", received());
    assert_eq!(m.deis_params().token, None);
}
