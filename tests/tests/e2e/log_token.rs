//! End to end, log spoofing (issue 9): network syslog lines enter an app's log only
//! with the app's ingest token (`deis logs:token`), which owner, collaborators and
//! admins may read and rotate; other lines are dropped and counted.

use std::io::Write;
use std::net::TcpStream;

use deis_e2e::{Cli, Deisd, Request, T, daemon_with_user, free_port, wait_for};

/// `deis logs -n 1000 -a APP` lines.
fn logs(cli: &Cli, app: &str) -> Vec<String> {
    cli.run(&["logs", "-n", "1000", "-a", app]).ok().lines().map(str::to_string).collect()
}

/// Sends RFC 5424 messages over one TCP connection (octet counting).
fn send(port: u16, messages: &[String]) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for m in messages {
        conn.write_all(format!("{} {m}", m.len()).as_bytes()).unwrap();
    }
}

/// A line from `hello.web.1` with `token` (if any) in the structured data.
fn line(app: &str, token: Option<&str>, text: &str) -> String {
    let sd = token.map_or_else(|| "-".to_string(), |t| format!("[deis@32473 token=\"{t}\"]"));
    format!("<14>1 - host {app}.web.1 - - {sd} {text}")
}

/// `deis_logger_messages_dropped_total{reason="bad_token"}` from the admin's `/metrics`.
fn dropped_bad_token(d: &Deisd, admin: &Cli) -> u64 {
    let r = Request::get("/metrics").header("Authorization", &format!("token {}", admin.token())).send(d.api).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("deis_logger_messages_dropped_total{reason=\"bad_token\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no bad_token counter in /metrics:\n{}", r.body)) as u64
}

fn token(cli: &Cli, app: &str, extra: &[&str]) -> String {
    let mut args = vec!["logs:token", "-a", app, "--json"];
    args.extend_from_slice(extra);
    let v = cli.run(&args).json();
    assert_eq!(v["app"], app, "{v}");
    v["token"].as_str().unwrap().to_string()
}

#[test]
fn syslog_lines_need_the_apps_ingest_token_which_members_may_rotate() {
    let syslog = free_port();
    // alice, the first user, is the admin; bob owns the app, carol collaborates, dave
    // is a stranger.
    let (d, alice) = daemon_with_user(&["--syslog-addr", &format!("127.0.0.1:{syslog}")]);
    let [bob, carol, dave] = ["bob", "carol", "dave"].map(|name| {
        let cli = d.cli();
        cli.register(&d, name);
        cli
    });
    bob.run(&["create", "shop"]).ok();
    bob.run(&["perms:create", "carol", "-a", "shop"]).ok();

    let first = token(&bob, "shop", &[]);
    assert_eq!(first.len(), 32, "{first}");
    assert!(first.bytes().all(|c| c.is_ascii_hexdigit()), "{first}");
    assert_eq!(token(&carol, "shop", &[]), first);
    assert_eq!(token(&alice, "shop", &[]), first);
    assert_eq!(bob.run(&["logs:token", "-a", "shop"]).ok().trim(), first, "plain output is the token");
    for denied in [vec!["logs:token", "-a", "shop"], vec!["logs:token", "-a", "shop", "--rotate"]] {
        let r = dave.run(&denied);
        assert_ne!(r.code, 0, "{denied:?}: {r:?}");
        assert!(r.stderr.contains("permission"), "{denied:?}: {r:?}");
    }
    // The API says 403 to strangers, as for the app's other endpoints, and 404 for no app.
    let api = |who: &Cli, method: &str, app: &str| {
        let path = format!("/v2/apps/{app}/logs/token");
        let r = if method == "GET" { Request::get(&path) } else { Request::post(&path) };
        r.header("Authorization", &format!("token {}", who.token())).send(d.api).unwrap().status
    };
    assert_eq!((api(&dave, "GET", "shop"), api(&dave, "POST", "shop")), (403, 403));
    assert_eq!(api(&bob, "GET", "nope"), 404);
    assert_eq!(token(&bob, "shop", &[]), first, "the stranger's rotation changed nothing");

    // A spoofed line (no token, a wrong one, another app's) is dropped and counted.
    bob.run(&["create", "other"]).ok();
    let other = token(&bob, "other", &[]);
    let before = dropped_bad_token(&d, &alice);
    send(
        syslog,
        &[
            line("shop", None, "spoofed-without-token"),
            line("shop", Some("0000"), "spoofed-wrong-token"),
            line("shop", Some(&other), "spoofed-other-apps-token"),
            line("shop", Some(&first), "taken-with-the-token"),
            // In the tag, as Docker's log driver sends it.
            format!("<14>1 - host shop.web.2/{first} - - - taken-with-the-tag-token"),
        ],
    );
    let lines = wait_for(T, "the lines with the token", || {
        Some(logs(&bob, "shop")).filter(|l| l.iter().any(|l| l.contains("taken-with-the-tag-token")))
    });
    assert!(lines.iter().any(|l| l.ends_with("shop[web.1]: taken-with-the-token")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("shop[web.2]: taken-with-the-tag-token")), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("spoofed") || l.contains(&first)), "{lines:#?}");
    wait_for(T, "three lines counted as bad_token", || (dropped_bad_token(&d, &alice) >= before + 3).then_some(()));

    // Rotation (by the collaborator): the old token is refused from then on.
    let second = token(&carol, "shop", &["--rotate"]);
    assert_ne!(second, first);
    assert_eq!(token(&bob, "shop", &[]), second);
    let r = alice.run(&["logs:token", "-a", "shop", "--rotate"]).ok();
    let third = r.lines().last().unwrap().trim().to_string();
    assert_ne!(third, second, "{r}");
    assert_eq!(token(&bob, "shop", &[]), third, "admins may rotate");
    let before = dropped_bad_token(&d, &alice);
    send(syslog, &[line("shop", Some(&first), "old-token-line"), line("shop", Some(&third), "new-token-line")]);
    let lines = wait_for(T, "the line with the new token", || {
        Some(logs(&bob, "shop")).filter(|l| l.iter().any(|l| l.contains("new-token-line")))
    });
    assert!(!lines.iter().any(|l| l.contains("old-token-line")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("Log ingest token rotated by carol")), "{lines:#?}");
    assert_eq!(dropped_bad_token(&d, &alice), before + 1);

    // The token goes with the app: a new app of the same name has another.
    bob.run(&["destroy", "-a", "shop", "--confirm=shop"]).ok();
    bob.run(&["create", "shop"]).ok();
    let fresh = token(&bob, "shop", &[]);
    assert!(![first, second, third].contains(&fresh));
}
