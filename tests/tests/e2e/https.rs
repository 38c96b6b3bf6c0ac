//! HTTPS through the real deisd: the platform certificate from --tls-cert/--tls-key,
//! certificates added and attached with the real `deis`, checked with `curl` and
//! `openssl s_client` trusting a test CA.

use std::process::Command;
use std::time::Duration;

use deis_e2e::tls::{curl, subject};
use deis_e2e::{daemon_with_user, deploy_hello, wait_for};
use deis_test_support::tls::TestCa;

const T: Duration = Duration::from_secs(20);

#[test]
fn certificates_from_the_cli_are_served_by_sni_and_tls_enable_redirects_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Deis E2E CA");
    let ca_file = dir.path().join("ca.pem");
    ca.write(&ca_file);
    let (platform_cert, platform_key) = ca.issue(&["*.deis.test", "deis.test"]).write(dir.path(), "platform");
    let (cert_flag, key_flag) = (platform_cert.to_str().unwrap(), platform_key.to_str().unwrap());
    let (d, cli) = daemon_with_user(&["--tls-cert", cert_flag, "--tls-key", key_flag]);
    let port = d.router_tls().unwrap().port();
    let _app = deploy_hello(&d, &cli, "shop");

    // The platform wildcard serves the app's default name.
    let (status, body) = wait_for(T, "HTTPS via the platform certificate", || curl(&ca_file, port, "shop.deis.test"));
    assert_eq!(status, 200, "{body}");
    assert!(subject(&ca_file, port, "shop.deis.test").contains("*.deis.test"));

    // A certificate of the user's own, attached to a custom domain.
    cli.run(&["domains:add", "www.shop.example", "-a", "shop"]).ok();
    let (www_cert, www_key) = ca.issue(&["www.shop.example"]).write(dir.path(), "www");
    let wrong = ca.issue(&["www.shop.example"]).write(dir.path(), "wrong").1;
    let r = cli.run(&["certs:add", "www", www_cert.to_str().unwrap(), wrong.to_str().unwrap()]);
    assert!(r.code != 0 && r.stderr.contains("does not match"), "{r:?}");
    let added = cli.run(&["certs:add", "www", www_cert.to_str().unwrap(), www_key.to_str().unwrap()]).ok();
    assert!(added.contains("www.shop.example") && added.contains("Expires"), "{added}");
    cli.run(&["certs:attach", "www", "www.shop.example"]).ok();
    let info = cli.run(&["certs:info", "www", "--json"]).json();
    assert_eq!(info["domains"], serde_json::json!(["www.shop.example"]));
    assert!(cli.run(&["certs"]).ok().contains("www.shop.example"));
    wait_for(T, "the attached certificate", || {
        Some(()).filter(|()| subject(&ca_file, port, "www.shop.example").contains("CN = www.shop.example"))
    });
    assert_eq!(curl(&ca_file, port, "www.shop.example").map(|r| r.0), Some(200));

    // tls:enable: plain HTTP is redirected to this port, where curl gets a 200.
    cli.run(&["tls:enable", "-a", "shop"]).ok();
    let r = wait_for(T, "redirect", || d.get_app("shop", "/x?y=1").ok().filter(|r| r.status == 301));
    assert_eq!(
        r.headers.get("location").map(String::as_str),
        Some(format!("https://shop.deis.test:{port}/x?y=1").as_str())
    );

    // Detached and removed: the domain falls back to the platform certificate.
    cli.run(&["certs:detach", "www", "www.shop.example"]).ok();
    cli.run(&["certs:remove", "www"]).ok();
    wait_for(T, "the platform certificate again", || {
        Some(()).filter(|()| subject(&ca_file, port, "www.shop.example").contains("*.deis.test"))
    });
}

#[test]
fn without_tls_flags_a_self_signed_platform_certificate_is_made_once() {
    let (mut d, _cli) = daemon_with_user(&[]);
    let port = d.router_tls().unwrap().port();
    let crt = d.data_dir.join("tls/platform.crt");
    let first = std::fs::read_to_string(&crt).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.data_dir.join("tls/platform.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "x.deis.test"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("*.deis.test"));
    d.stop();
    d.spawn();
    assert_eq!(std::fs::read_to_string(&crt).unwrap(), first, "kept across restarts");
}
