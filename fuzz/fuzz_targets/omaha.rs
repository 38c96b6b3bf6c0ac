//! The Omaha v3 parsers: `parse_request` and `parse_response` never panic on any bytes;
//! a parsed request stays within the limits, and what a client renders from it parses
//! back to the same apps.

#![no_main]

use deis_sdk::update::omaha::{self, ClientApp, MAX_APPS, MAX_EVENTS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = omaha::parse_response(data);
    let Ok(request) = omaha::parse_request(data) else { return };
    assert!(request.apps.len() <= MAX_APPS);
    let apps: Vec<ClientApp> = request
        .apps
        .iter()
        .map(|a| {
            assert!(a.events.len() <= MAX_EVENTS);
            ClientApp {
                appid: a.appid.clone(),
                version: a.version.clone().unwrap_or_default(),
                track: a.track.clone().unwrap_or_default(),
                machineid: a.machineid.clone().unwrap_or_default(),
                updatecheck: a.updatecheck,
                events: a.events.iter().map(|e| (e.event_type, e.result, e.error_code, e.previous_version.clone())).collect(),
            }
        })
        .collect();
    let again = omaha::parse_request(omaha::render_request(&apps).as_bytes()).expect("a rendered request parses");
    let ids: Vec<_> = again.apps.iter().map(|a| &a.appid).collect();
    assert_eq!(ids, request.apps.iter().map(|a| &a.appid).collect::<Vec<_>>());
});
