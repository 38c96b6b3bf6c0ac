//! HTTPS clients for the tests: `curl` and `openssl s_client` trusting a test CA.

use std::path::Path;
use std::process::Command;

/// `curl` over HTTPS to `name` at the router's TLS port, trusting `ca`: status and body.
pub fn curl(ca: &Path, port: u16, name: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1"), "-w", "\n%{http_code}"])
        .arg(format!("https://{name}:{port}/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    out.status.success().then(|| (code.trim().parse().unwrap(), body.to_string()))
}

/// The subject `openssl s_client` sees for SNI `name`.
pub fn subject(ca: &Path, port: u16, name: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", name, "-CAfile"])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    text.lines().find_map(|l| l.strip_prefix("subject=")).unwrap_or_default().to_string()
}
