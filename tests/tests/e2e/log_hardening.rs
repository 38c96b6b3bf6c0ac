//! End to end, the log faults of issue 9: a drain pointed back at the platform is
//! refused, and one that loops back anyway (through a relay) stops after one round.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use deis_e2e::{Cli, T, daemon_with_user, free_port, wait_for};

/// `deis logs -n 1000 -a APP` lines.
fn logs(cli: &Cli, app: &str) -> Vec<String> {
    cli.run(&["logs", "-n", "1000", "-a", app]).ok().lines().map(str::to_string).collect()
}

#[test]
fn drains_to_our_own_listeners_are_refused_and_loops_stop() {
    let syslog = free_port();
    let (d, _alice) = daemon_with_user(&["--syslog-addr", &format!("127.0.0.1:{syslog}")]);
    // bob is no admin (alice, the first user, is).
    let bob = d.cli();
    bob.register(&d, "bob");
    bob.run(&["create", "loopy"]).ok();
    for url in [
        format!("syslog://127.0.0.1:{syslog}"),
        format!("syslog+udp://localhost:{syslog}"),
        format!("syslog://0.0.0.0:{syslog}"),
        format!("syslog://[::ffff:127.0.0.1]:{syslog}"),
        format!("syslog://127.0.0.2:{}", d.api.port()),
        format!("syslog+tls://localhost:{}", d.router.port()),
        format!("syslog://127.0.0.1:{}", d.builder.port()),
    ] {
        let r = bob.run(&["drains:add", &url, "-a", "loopy"]);
        assert_ne!(r.code, 0, "{url} accepted: {}", r.stdout);
        assert!(r.stderr.contains("endless loop"), "{url}: {}", r.stderr);
    }
    assert_eq!(bob.run(&["drains:list", "-a", "loopy", "--json"]).json().as_array().map(Vec::len), Some(0));

    // A relay that sends whatever it receives to our syslog port: the loop the check
    // can't see. The hop marker ends it after one round.
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let relayed = Arc::new(Mutex::new(Vec::<u8>::new()));
    let out = Arc::new(Mutex::new(TcpStream::connect(("127.0.0.1", syslog)).unwrap()));
    let (seen, to_us) = (relayed.clone(), out.clone());
    std::thread::spawn(move || {
        for conn in relay.incoming() {
            let Ok(mut conn) = conn else { break };
            let (seen, to_us) = (seen.clone(), to_us.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    let _ = to_us.lock().unwrap().write_all(&buf[..n]);
                }
            });
        }
    });
    bob.run(&["drains:add", &format!("syslog://127.0.0.1:{relay_port}"), "-a", "loopy"]).ok();
    bob.run(&["config:set", "LOOP=1", "-a", "loopy"]).ok();
    wait_for(T, "the relay to pass the release line back", || {
        String::from_utf8_lossy(&relayed.lock().unwrap()).contains("bob added LOOP").then_some(())
    });
    // A plain line (with the app's ingest token) after it on the same connection: once
    // it is in the log, deisd has handled the relayed line before it.
    let token = bob.run(&["logs:token", "-a", "loopy"]).ok().trim().to_string();
    let sentinel = format!("<14>1 - relay loopy - - [deis@32473 token=\"{token}\"] sentinel-after-the-loop");
    let frame = [format!("{} ", sentinel.len()).as_bytes(), sentinel.as_bytes()].concat();
    out.lock().unwrap().write_all(&frame).unwrap();
    let lines = wait_for(T, "the sentinel in the log", || {
        Some(logs(&bob, "loopy")).filter(|l| l.iter().any(|l| l.contains("sentinel-after-the-loop")))
    });
    let copies = lines.iter().filter(|l| l.contains("bob added LOOP")).count();
    assert_eq!(copies, 1, "the relayed line was taken again: {lines:#?}");
    let text = String::from_utf8_lossy(&relayed.lock().unwrap()).into_owned();
    assert_eq!(text.matches("bob added LOOP").count(), 1, "{text}");
    assert!(text.contains("[deis@32473 hop=\"1\" origin=\""), "drains mark their lines: {text}");
}
