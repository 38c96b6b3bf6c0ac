//! The quickstart app is what newcomers copy, so it must be fast: every keep-alive
//! response goes out at once. Python's `http.server` writes the head and the body in
//! two writes; with Nagle's algorithm on, the body then waits for the peer's delayed
//! ACK (40 ms on Linux) on every request after the first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `web.py` on a free port; the app and its port once it listens.
fn start_hello() -> (App, u16) {
    let port = deis_test_support::free_port();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/hello");
    let mut child = Command::new("python3")
        .arg("web.py")
        .current_dir(dir)
        .env("PORT", port.to_string())
        .env("DEIS_UNIT", "hello.web.1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the hello app");
    // It prints `... listening on ...` once the socket is bound.
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    output.read_line(&mut first).unwrap();
    assert!(first.contains("listening on"), "{first:?}");
    // Keep reading its access log, so its writes to stdout never fail.
    std::thread::spawn(move || std::io::copy(&mut output, &mut std::io::sink()));
    (App(child), port)
}

/// Reads one response with a `Content-Length` body; returns the body.
fn read_response(conn: &mut BufReader<TcpStream>) -> String {
    let mut length = 0;
    loop {
        let mut line = String::new();
        assert!(conn.read_line(&mut line).unwrap() > 0, "connection closed mid-response");
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

#[test]
fn keep_alive_responses_are_not_held_back_by_nagle() {
    let (_app, port) = start_hello();
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap(); // the client side is not what is tested
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut took = Vec::new();
    for _ in 0..25 {
        let sent = Instant::now();
        writer.write_all(b"GET / HTTP/1.1\r\nHost: hello\r\n\r\n").unwrap();
        let body = read_response(&mut reader);
        took.push(sent.elapsed());
        assert_eq!(body, "Hello from hello.web.1 (v0)\n");
    }
    took.sort();
    // With the delay every request but the first takes >= 40 ms; without it they take
    // about a millisecond. The median, with a wide margin for a busy machine.
    let median = took[took.len() / 2];
    assert!(median < Duration::from_millis(20), "median {median:?} per keep-alive request: {took:?}");
}
