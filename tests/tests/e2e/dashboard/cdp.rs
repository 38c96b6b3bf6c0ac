//! A headless Chromium driven over the DevTools protocol (one WebSocket to one page):
//! navigate, evaluate script, and collect every console error, warning and uncaught
//! exception the page produces.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deis_test_support::http::Request;
use deis_test_support::wait_for;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one protocol call may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A private Chromium (own profile directory, killed with its process group on drop).
pub struct Browser {
    child: Child,
    devtools: SocketAddr,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromium --headless` on a free DevTools port; the port is read from the
    /// profile's `DevToolsActivePort` once Chromium wrote it.
    pub fn launch() -> Self {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        let log = std::fs::File::create(dir.path().join("chromium.log")).unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                // Tests run as root, where Chromium's sandbox refuses to start.
                "--no-sandbox",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own group, so that drop ends the renderer and helper processes too.
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let mut browser = Browser { child, devtools: SocketAddr::from(([127, 0, 0, 1], 0)), dir };
        let port_file = profile.join("DevToolsActivePort");
        let port: u16 = wait_for(deis_e2e::T, "Chromium's DevToolsActivePort", || {
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!("chromium exited ({status}):\n{}", browser.log());
            }
            std::fs::read_to_string(&port_file).ok()?.lines().next()?.trim().parse().ok()
        });
        browser.devtools.set_port(port);
        browser
    }

    /// Chromium's own output, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default()
    }

    /// Attaches to the page Chromium opened (`about:blank`), with the runtime, log and
    /// page domains on.
    pub fn page(&self) -> Page {
        let url = wait_for(deis_e2e::T, "Chromium's page target", || {
            let r = Request::get("/json/list").send(self.devtools).ok()?;
            let targets: Value = serde_json::from_str(&r.body).ok()?;
            targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_string)
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (ws, _) =
            rt.block_on(tokio_tungstenite::connect_async(url.as_str())).expect("connect to the page's DevTools");
        let mut page = Page { rt, ws, next_id: 0, problems: Vec::new() };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(domain, json!({}));
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group leader's id is the group's: `kill -s KILL -- -<pgid>`.
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page of the browser.
pub struct Page {
    rt: tokio::runtime::Runtime,
    ws: Socket,
    next_id: u64,
    problems: Vec<String>,
}

impl Page {
    /// Sends `method` with `params` and returns its `result`; events read meanwhile are
    /// checked for console problems.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        let Page { rt, ws, problems, .. } = self;
        rt.block_on(async {
            ws.send(Message::text(msg)).await.expect("send to DevTools");
            let read = async {
                loop {
                    let msg = ws.next().await.expect("DevTools closed").expect("read DevTools");
                    let Message::Text(text) = msg else { continue };
                    let v: Value = serde_json::from_str(text.as_str()).expect("DevTools sends JSON");
                    if v["id"] == id {
                        if let Some(e) = v.get("error") {
                            panic!("{method}: {e}");
                        }
                        return v["result"].clone();
                    }
                    if let Some(p) = problem(&v) {
                        problems.push(p);
                    }
                }
            };
            tokio::time::timeout(CALL_TIMEOUT, read).await.unwrap_or_else(|_| panic!("{method}: no answer"))
        })
    }

    /// Loads `url` (returns once the navigation is committed; wait on the page's state
    /// with [`Page::wait_true`]).
    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "navigate to {url}: {r}");
    }

    /// The value of the JavaScript expression `expr` (promises awaited).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r =
            self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }));
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Polls `expr` until it is `true`; panics after the deadline with `what` and the
    /// page's text.
    pub fn wait_true(&mut self, what: &str, expr: &str) {
        let deadline = std::time::Instant::now() + deis_e2e::T;
        while self.eval(expr) != Value::Bool(true) {
            if std::time::Instant::now() >= deadline {
                let text = self.eval("document.body ? document.body.innerText : ''");
                panic!("timed out waiting for {what} ({expr}); the page shows:\n{}", text.as_str().unwrap_or(""));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Console errors and warnings, failed loads and uncaught exceptions seen so far
    /// (after a round trip, so that events already sent are in).
    pub fn problems(&mut self) -> Vec<String> {
        self.eval("0");
        self.problems.clone()
    }
}

/// A console error or warning, a failed load or an uncaught exception in `event`.
fn problem(event: &Value) -> Option<String> {
    let p = &event["params"];
    match event["method"].as_str()? {
        "Runtime.exceptionThrown" => Some(format!("uncaught: {}", p["exceptionDetails"])),
        "Runtime.consoleAPICalled" if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) => {
            Some(format!("console.{}: {}", p["type"].as_str().unwrap_or(""), p["args"]))
        }
        "Log.entryAdded" if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) => {
            Some(format!("log {}: {} ({})", p["entry"]["level"], p["entry"]["text"], p["entry"]["url"]))
        }
        _ => None,
    }
}
