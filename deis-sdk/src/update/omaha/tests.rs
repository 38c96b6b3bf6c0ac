use proptest::prelude::*;

use super::*;

const GO_OMAHA: &[u8] = include_bytes!("../../../../docs/fixtures/omaha/go-omaha-request.xml");
const UE_UPDATE: &[u8] = include_bytes!("../../../../docs/fixtures/omaha/go-omaha-update-engine-update-request.xml");
const UE_NO_UPDATE: &[u8] =
    include_bytes!("../../../../docs/fixtures/omaha/go-omaha-update-engine-no-update-request.xml");
const UE_RESPONSE: &[u8] = include_bytes!("../../../../docs/fixtures/omaha/go-omaha-update-engine-update-response.xml");

#[test]
fn update_engine_request_with_ping_check_and_event_in_one_app() {
    let r = parse_request(UE_UPDATE).unwrap();
    assert_eq!((r.protocol.as_str(), r.client_version.as_deref()), ("3.0", Some("ChromeOSUpdateEngine-0.1.0.0")));
    assert_eq!(r.apps.len(), 1);
    let app = &r.apps[0];
    assert_eq!(app.appid, "{87efface-864d-49a5-9bb3-4b050a7c227a}");
    assert_eq!(app.version.as_deref(), Some("ForcedUpdate"));
    assert_eq!(app.track.as_deref(), Some("dev-channel"));
    assert_eq!(app.machineid.as_deref(), Some("{8BDE4C4D-9083-4D61-B41C-3253212C0C37}"));
    assert_eq!(app.bootid.as_deref(), Some("{7D52A1CC-7066-40F0-91C7-7CB6A871BFDE}"));
    assert!(app.ping && app.updatecheck);
    assert_eq!(app.events, [EventRequest { event_type: 3, result: 2, error_code: None, previous_version: None }]);
}

#[test]
fn update_engine_event_only_request() {
    let r = parse_request(UE_NO_UPDATE).unwrap();
    let app = &r.apps[0];
    assert_eq!((app.track.as_deref(), app.machineid.as_deref()), (None, None), "track=\"\" is no track");
    assert!(!app.ping && !app.updatecheck);
    assert_eq!(app.events[0], EventRequest { event_type: 3, result: 1, ..EventRequest::default() });
}

#[test]
fn go_omaha_request_with_two_apps_and_a_request_userid() {
    let r = parse_request(GO_OMAHA).unwrap();
    assert_eq!(r.userid.as_deref(), Some("{D0BBD725-742D-44ae-8D46-0231E881D58E}"));
    let ids: Vec<_> = r.apps.iter().map(|a| (a.appid.as_str(), a.version.as_deref(), a.updatecheck, a.ping)).collect();
    assert_eq!(
        ids,
        [
            ("{430FD4D0-B729-4F61-AA34-91526481799D}", Some("1.3.23.0"), true, true),
            ("{D0AB2EBC-931B-4013-9FEB-C9C4C2225C8C}", Some("2.2.2.0"), true, true)
        ]
    );
}

#[test]
fn unknown_elements_attributes_namespaces_and_comments_are_skipped() {
    let xml = br#"<?xml version="1.0"?><!-- hi --><o:request xmlns:o="http://www.google.com/update2/request" protocol="3.0" shiny="yes">
        <hw physmemory="16"/><app appid="a" version="1&amp;2" future="x"><data name="install"><deep><er/></deep></data>
        <updatecheck tttoken="t"><extra/></updatecheck><event eventtype="13" eventresult="1" errorcode="-7" extra="1"/></app>
        <telemetry><app appid="not-an-app-of-the-request"/></telemetry></o:request>"#;
    let r = parse_request(xml).unwrap();
    assert_eq!(r.apps.len(), 1, "an <app> nested elsewhere is not an app of the request");
    let app = &r.apps[0];
    assert_eq!(app.version.as_deref(), Some("1&2"), "entities are decoded");
    assert!(app.updatecheck);
    assert_eq!(app.events[0].error_code, Some(-7));
}

#[test]
fn malformed_and_foreign_documents_are_refused_with_a_reason() {
    let cases: [(&[u8], &str); 8] = [
        (b"", "no <request>"),
        (b"<request protocol=\"3.0\"><app appid=\"a\"></request>", "malformed XML"),
        (b"<request protocol=\"3.0\"><app appid=\"a\"/>", "malformed"),
        (b"<request protocol=\"2.0\"/>", "protocol \"2.0\""),
        (b"<response protocol=\"3.0\"/>", "root element is <response>"),
        (b"<request protocol=\"3.0\"><app/></request>", "no appid"),
        (b"<request protocol=\"3.0\"><app appid=\"a\"><event eventtype=\"x\"/></app></request>", "eventtype=\"x\""),
        (b"<request protocol=\"3.0\"/><request protocol=\"3.0\"/>", "not one <request>"),
    ];
    for (xml, wanted) in cases {
        let e = parse_request(xml).unwrap_err().to_string();
        assert!(e.contains(wanted), "{:?}: {e}", String::from_utf8_lossy(xml));
    }
}

#[test]
fn an_unfinished_document_names_the_innermost_open_element() {
    let e = parse_request(b"<request protocol=\"3.0\"><app appid=\"a\"><updatecheck>").unwrap_err().to_string();
    assert!(e.contains("ends inside <updatecheck>"), "{e}");
    let e = parse_request(b"<request protocol=\"3.0\"><app appid=\"a\"><x/>").unwrap_err().to_string();
    assert!(e.contains("ends inside <app>"), "{e}");
}

#[test]
fn only_children_of_an_app_count_for_it() {
    let xml = b"<request protocol=\"3.0\"><app appid=\"a\"/><os><updatecheck/><ping/></os>\
        <x><app appid=\"nested\"/></x></request>";
    let request = parse_request(xml).unwrap();
    assert_eq!(request.apps.len(), 1, "{request:?}");
    assert!(!request.apps[0].updatecheck && !request.apps[0].ping, "{request:?}");
}

#[test]
fn limits_are_enforced() {
    let app = "<app appid=\"a\"/>";
    let many = format!("<request protocol=\"3.0\">{}</request>", app.repeat(MAX_APPS + 1));
    assert!(matches!(parse_request(many.as_bytes()), Err(OmahaError::TooLarge(_))));
    let events = "<event eventtype=\"3\" eventresult=\"1\"/>".repeat(MAX_EVENTS + 1);
    let xml = format!("<request protocol=\"3.0\"><app appid=\"a\">{events}</app></request>");
    assert!(matches!(parse_request(xml.as_bytes()), Err(OmahaError::TooLarge(_))));
    let deep = format!("<request protocol=\"3.0\">{}{}</request>", "<x>".repeat(MAX_DEPTH), "</x>".repeat(MAX_DEPTH));
    assert!(matches!(parse_request(deep.as_bytes()), Err(OmahaError::TooLarge(_))));
    let long = format!("<request protocol=\"3.0\"><app appid=\"{}\"/></request>", "a".repeat(MAX_ATTR_BYTES + 1));
    assert!(matches!(parse_request(long.as_bytes()), Err(OmahaError::TooLarge(_))));
}

fn manifest() -> Manifest {
    Manifest {
        version: "9999.0.0".into(),
        url: "http://kam:8080/static/".into(),
        name: "update.gz".into(),
        size: 67546213,
        sha1: Some("+LXvjiaPkeYDLHoNKlf9qbJwvnk=".into()),
        sha256_hex: "d15025416dd113df521ad481e51e26d3c6a7b401cef170e804c283cb1413fcc8".into(),
        sha256_base64: "0VAlQW3RE99SGtSB5R4m08antAHO8XDoBMKDyxQT/Mg=".into(),
    }
}

#[test]
fn the_rendered_update_parses_back_like_the_update_engine_fixture() {
    let response = Response {
        server: "deis".into(),
        daystart_elapsed: 49008,
        apps: vec![AppResponse {
            appid: "{87efface-864d-49a5-9bb3-4b050a7c227a}".into(),
            status: "ok".into(),
            ping: true,
            events: 1,
            updatecheck: Some(UpdateCheck::Update(manifest())),
        }],
    };
    let ours = parse_response(response.render().as_bytes()).unwrap();
    let fixture = parse_response(UE_RESPONSE).unwrap();
    let mut expected = fixture[0].clone();
    // The fixture has no hash_sha256 on the package, only the action's base64 one.
    expected.manifest.as_mut().unwrap().sha256_hex = manifest().sha256_hex;
    assert_eq!(ours, [expected]);
    assert_eq!(fixture[0].manifest.as_ref().unwrap().sha256(), manifest().sha256(), "hex and base64 agree");
    let xml = response.render();
    assert!(xml.contains("<ping status=\"ok\"/><event status=\"ok\"/><updatecheck status=\"ok\">"), "{xml}");
    assert!(xml.contains("<daystart elapsed_seconds=\"49008\"/>"), "{xml}");
}

#[test]
fn a_client_request_parses_back() {
    let apps = [ClientApp {
        appid: "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}".into(),
        version: "1.0.0".into(),
        track: "stable".into(),
        machineid: "replica-1".into(),
        updatecheck: true,
        events: vec![(3, 0, Some(7), Some("0.9.0".into())), (13, 1, None, None)],
    }];
    let r = parse_request(render_request(&apps).as_bytes()).unwrap();
    let app = &r.apps[0];
    assert_eq!((app.machineid.as_deref(), app.track.as_deref()), (Some("replica-1"), Some("stable")));
    assert!(app.updatecheck && app.ping);
    assert_eq!(app.events[0].error_code, Some(7));
    assert_eq!(app.events[0].previous_version.as_deref(), Some("0.9.0"));
    assert_eq!(app.events[1].event_type, 13);
}

#[test]
fn attribute_values_are_escaped() {
    let mut m = manifest();
    m.url = "http://h/a?b=1&c=\"2\"/".into();
    let response = Response {
        server: "<deis>".into(),
        daystart_elapsed: 0,
        apps: vec![AppResponse {
            appid: "x\"y".into(),
            status: "ok".into(),
            ping: false,
            events: 0,
            updatecheck: Some(UpdateCheck::Update(m.clone())),
        }],
    };
    let back = parse_response(response.render().as_bytes()).unwrap();
    assert_eq!(back[0].appid, "x\"y");
    assert_eq!(back[0].manifest.as_ref().unwrap().url, m.url);
}

proptest! {
    /// Any bytes: an answer or an error, never a panic.
    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_request(&bytes);
        let _ = parse_response(&bytes);
    }

    /// Fixtures cut or spliced anywhere: an answer or an error, never a panic.
    #[test]
    fn damaged_fixtures_never_panic(at in 0usize..1200, junk in "[<>/=\"a-z &;]{0,12}") {
        for fixture in [GO_OMAHA, UE_UPDATE, UE_NO_UPDATE, UE_RESPONSE] {
            let at = at.min(fixture.len());
            let mut bytes = fixture[..at].to_vec();
            bytes.extend_from_slice(junk.as_bytes());
            bytes.extend_from_slice(&fixture[at..]);
            let _ = parse_request(&bytes);
            let _ = parse_response(&bytes);
        }
    }
}
