//! StatsD over UDP: counters as increments since the previous snapshot (`|c`), gauges
//! as values (`|g`), histograms as their count and sum increments. Series are named
//! `<prefix>.<family>.<label values...>` (see `flat_name`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::UdpSocket;

use super::{Sink, flat_name};
use crate::telemetry::family::{Kind, MetricFamily, Value};

/// Datagram payload limit (fits an Ethernet MTU with IP and UDP headers).
const MAX_DATAGRAM: usize = 1432;

/// A StatsD receiver.
#[derive(Debug)]
pub struct StatsdSink {
    addr: SocketAddr,
    prefix: String,
    previous: Mutex<HashMap<String, f64>>,
}

impl StatsdSink {
    /// Sends to `addr`, names prefixed with `prefix` (none if empty).
    pub fn new(addr: SocketAddr, prefix: &str) -> Self {
        Self { addr, prefix: prefix.to_string(), previous: Mutex::default() }
    }

    /// The StatsD lines of a snapshot (counters as increments since the last call).
    pub fn lines(&self, snapshot: &[MetricFamily]) -> Vec<String> {
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let prefix = |n: String| if self.prefix.is_empty() { n } else { format!("{}.{n}", self.prefix) };
        let mut increment = |name: String, now: f64, out: &mut Vec<String>| {
            let before = previous.insert(name.clone(), now).unwrap_or(0.0);
            let delta = now - before;
            // A reset (restart) starts over from the new value.
            let delta = if delta < 0.0 { now } else { delta };
            if delta > 0.0 {
                out.push(format!("{name}:{}|c", trim(delta)));
            }
        };
        for f in snapshot {
            for s in &f.samples {
                let name = prefix(flat_name(&f.name, &s.labels));
                match (&s.value, f.kind) {
                    (Value::Number(v), Kind::Counter) => increment(name, *v, &mut out),
                    (Value::Number(v), _) => out.push(format!("{name}:{}|g", trim(*v))),
                    (Value::Histogram(h), _) => {
                        increment(format!("{name}.count"), h.count as f64, &mut out);
                        increment(format!("{name}.sum"), h.sum, &mut out);
                    }
                }
            }
        }
        out
    }
}

/// A number without a useless fraction.
fn trim(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

#[async_trait::async_trait]
impl Sink for StatsdSink {
    fn name(&self) -> String {
        format!("statsd://{}", self.addr)
    }

    async fn send(&self, snapshot: &[MetricFamily]) -> Result<(), String> {
        let lines = self.lines(snapshot);
        let bind: SocketAddr = if self.addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
        socket.connect(self.addr).await.map_err(|e| format!("{}: {e}", self.addr))?;
        let mut datagram = String::new();
        for line in lines {
            if !datagram.is_empty() && datagram.len() + 1 + line.len() > MAX_DATAGRAM {
                socket.send(datagram.as_bytes()).await.map_err(|e| format!("{}: {e}", self.addr))?;
                datagram.clear();
            }
            if !datagram.is_empty() {
                datagram.push('\n');
            }
            datagram.push_str(&line);
        }
        if !datagram.is_empty() {
            socket.send(datagram.as_bytes()).await.map_err(|e| format!("{}: {e}", self.addr))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_udp_receiver_gets_counter_increments_and_gauges() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sink = StatsdSink::new(receiver.local_addr().unwrap(), "deis");
        let snapshot = |n: f64| {
            let mut c = MetricFamily::new("deis_router_requests", "r", Kind::Counter);
            c.push(&[("app", "hello"), ("class", "2xx")], n);
            vec![c, MetricFamily::single("deis_host_load1", "l", Kind::Gauge, 0.5)]
        };
        sink.send(&snapshot(5.0)).await.unwrap();
        sink.send(&snapshot(12.0)).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), receiver.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got[0], "deis.deis_router_requests.hello.2xx:5|c\ndeis.deis_host_load1:0.5|g");
        assert_eq!(got[1], "deis.deis_router_requests.hello.2xx:7|c\ndeis.deis_host_load1:0.5|g");
    }
}
