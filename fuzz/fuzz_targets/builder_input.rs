//! The builder's parsers of outside bytes: the SSH exec request a client sends
//! (`git-receive-pack '<app>.git'`) and the ref update lines its hook relays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = deis_sdk::builder::parse_command(data) {
        // Whatever is accepted names a valid app and is short.
        assert!(data.len() <= deis_sdk::builder::MAX_COMMAND_BYTES);
        assert!(command.app.as_str().parse::<deis_sdk::deis_core::AppName>().is_ok());
    }
    if let Ok(line) = std::str::from_utf8(data) {
        if let Some(update) = deis_sdk::builder::RefUpdate::parse(line) {
            assert!(update.name.starts_with("refs/") && !update.name.contains(' '));
        }
    }
});
