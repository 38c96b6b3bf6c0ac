//! The routing table: host name -> app -> backends, rebuilt from the store's records.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use deis_core::store::records::Endpoint;

use super::backend::{Backend, PoolSettings, worker_index};
use super::policy::TrafficPolicy;

/// Process types whose endpoints receive HTTP traffic: `web`, and `cmd` (the process
/// type of image apps without a Procfile).
pub(crate) const ROUTED_PROC_TYPES: [&str; 2] = ["web", "cmd"];

/// One worker's round-robin position, on a cache line of its own so that workers
/// never contend for it.
#[derive(Debug)]
#[repr(align(128))]
struct Cursor(AtomicUsize);

/// One app's route: its backends and round-robin positions.
#[derive(Debug)]
pub(crate) struct AppRoute {
    /// App id.
    pub app: Box<str>,
    /// The app's routed endpoints, in endpoint key order.
    pub backends: Box<[Arc<Backend>]>,
    /// What to check before forwarding (`None`: nothing, the common case).
    pub policy: Option<Arc<TrafficPolicy>>,
    /// Round-robin position of each router worker (like nginx, each worker takes its
    /// own turns; together they spread evenly).
    next: Box<[Cursor]>,
    /// The app's traffic counters, found at its first counted request.
    traffic: std::sync::OnceLock<Arc<crate::telemetry::traffic::AppTrafficCounters>>,
}

impl AppRoute {
    fn new(
        app: &str,
        backends: Box<[Arc<Backend>]>,
        policy: Option<Arc<TrafficPolicy>>,
        workers: usize,
        previous: Option<&AppRoute>,
    ) -> Self {
        // Workers start staggered, so that their first requests go to different
        // backends; a rebuilt route continues where the previous one was.
        let next = (0..workers.max(1))
            .map(|i| {
                Cursor(AtomicUsize::new(
                    previous.and_then(|p| p.next.get(i)).map_or(i, |c| c.0.load(Ordering::Relaxed)),
                ))
            })
            .collect();
        Self { app: app.into(), backends, policy, next, traffic: std::sync::OnceLock::new() }
    }

    /// The app's traffic counters in `metrics` (looked up once per route).
    pub fn traffic(
        &self,
        metrics: &crate::telemetry::RouterMetrics,
    ) -> &Arc<crate::telemetry::traffic::AppTrafficCounters> {
        self.traffic.get_or_init(|| metrics.app(&self.app))
    }

    /// Next round-robin start position of the calling worker.
    pub fn next_start(&self) -> usize {
        self.next[worker_index() % self.next.len()].0.fetch_add(1, Ordering::Relaxed)
    }

    /// The calling worker's round-robin position (for tests).
    #[cfg(test)]
    fn position(&self) -> usize {
        self.next[worker_index() % self.next.len()].0.load(Ordering::Relaxed)
    }

    fn same_backends(&self, addrs: &[SocketAddr]) -> bool {
        self.backends.len() == addrs.len() && self.backends.iter().zip(addrs).all(|(b, a)| b.addr == *a)
    }
}

/// How an app's traffic is handled, from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppTraffic {
    /// `false` after `deis routing:disable`: none of its hosts is routed.
    pub routable: bool,
    /// Checks before forwarding, if any.
    pub policy: Option<Arc<TrafficPolicy>>,
}

impl Default for AppTraffic {
    fn default() -> Self {
        Self { routable: true, policy: None }
    }
}

/// What the router knows from the store: apps, custom domains, endpoints.
#[derive(Debug, Default, Clone)]
pub(crate) struct RouteState {
    /// App ids (from `apps/<app>`) and how their traffic is handled.
    pub apps: BTreeMap<String, AppTraffic>,
    /// Domain key suffix -> (domain, app), from `domains/<domain>`.
    pub domains: BTreeMap<String, (String, String)>,
    /// Endpoint key -> endpoint, from `endpoints/...`.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// The app name the platform host's route carries (`deis` is a reserved app name, so
/// no app can own it).
pub(crate) const PLATFORM_APP: &str = "deis";

/// An immutable routing table; a new one is published on every change.
#[derive(Debug, Default)]
pub(crate) struct RoutingTable {
    /// Exact host -> route.
    exact: HashMap<Box<str>, Arc<AppRoute>>,
    /// `*.example.com` entries, keyed by `example.com`.
    wildcard: HashMap<Box<str>, Arc<AppRoute>>,
    /// App id -> route.
    apps: HashMap<Box<str>, Arc<AppRoute>>,
    /// The platform host's route (to the controller), kept across rebuilds.
    platform: Option<Arc<AppRoute>>,
}

impl RoutingTable {
    /// Finds the route of a normalised host (see [`normalize_host`]).
    pub fn lookup(&self, host: &str) -> Option<&Arc<AppRoute>> {
        if let Some(r) = self.exact.get(host) {
            return Some(r);
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// Number of hosts routed (exact and wildcard).
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Builds a table from the store state.
    ///
    /// Backends with an address already in `backends` are reused (keeping their
    /// pooled connections); the map is pruned to the addresses still in use. Routes
    /// whose backends did not change are taken over from `previous`, so round-robin
    /// continues where it was.
    ///
    /// `platform` is the reserved platform host (`deis.<domain>`, normalised) and the
    /// controller's address: it is entered last, so it wins over every app and custom
    /// domain.
    pub fn build(
        state: &RouteState,
        domain: &str,
        platform: Option<&(String, SocketAddr)>,
        previous: &RoutingTable,
        backends: &mut HashMap<SocketAddr, Arc<Backend>>,
        pool: PoolSettings,
    ) -> RoutingTable {
        let mut by_app: BTreeMap<&str, Vec<SocketAddr>> = BTreeMap::new();
        for ep in state.endpoints.values() {
            if ROUTED_PROC_TYPES.contains(&ep.proc_type.as_str()) {
                let addrs = by_app.entry(ep.app.as_str()).or_default();
                if !addrs.contains(&ep.address) {
                    addrs.push(ep.address);
                }
            }
        }
        let mut used: HashMap<SocketAddr, Arc<Backend>> = HashMap::new();
        let mut apps: HashMap<Box<str>, Arc<AppRoute>> = HashMap::new();
        let mut route_for = |app: &str| -> Arc<AppRoute> {
            if let Some(r) = apps.get(app) {
                return r.clone();
            }
            let addrs = by_app.get(app).map(Vec::as_slice).unwrap_or(&[]);
            let policy = state.apps.get(app).and_then(|t| t.policy.clone());
            let route = match previous.apps.get(app) {
                Some(prev) if prev.same_backends(addrs) && prev.policy == policy => {
                    for b in prev.backends.iter() {
                        used.insert(b.addr, b.clone());
                    }
                    prev.clone()
                }
                prev => {
                    let list: Box<[Arc<Backend>]> = addrs
                        .iter()
                        .map(|a| {
                            let b = backends.get(a).cloned().unwrap_or_else(|| Arc::new(Backend::new(*a, pool)));
                            used.insert(*a, b.clone());
                            b
                        })
                        .collect();
                    Arc::new(AppRoute::new(app, list, policy, pool.workers, prev.map(|p| &**p)))
                }
            };
            apps.insert(app.into(), route.clone());
            route
        };

        let mut exact: HashMap<Box<str>, Arc<AppRoute>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Arc<AppRoute>> = HashMap::new();
        let routable = |app: &str| state.apps.get(app).is_none_or(|t| t.routable);
        for (name, app) in state.domains.values() {
            if !routable(app) {
                continue;
            }
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(parent) = name.strip_prefix("*.") {
                wildcard.insert(parent.into(), route_for(app));
            } else if !name.contains('.') {
                // A bare label is the app's default name under the platform domain.
                if !domain.is_empty() {
                    exact.insert(format!("{name}.{domain}").into(), route_for(app));
                }
            } else {
                exact.insert(name.into(), route_for(app));
            }
        }
        // Default hosts go last so a custom domain can't take over another app's name.
        if !domain.is_empty() {
            for app in state.apps.keys().filter(|a| routable(a)) {
                exact.insert(format!("{app}.{domain}").into(), route_for(app));
            }
        }
        // The platform host goes very last: it wins over apps and custom domains.
        let platform = platform.map(|(host, addr)| {
            let route = match &previous.platform {
                Some(prev) if prev.same_backends(std::slice::from_ref(addr)) => prev.clone(),
                _ => {
                    let b = backends.get(addr).cloned().unwrap_or_else(|| Arc::new(Backend::new(*addr, pool)));
                    Arc::new(AppRoute::new(PLATFORM_APP, Box::new([b]), None, pool.workers, None))
                }
            };
            used.insert(*addr, route.backends[0].clone());
            exact.insert(normalize_host(host).into_owned().into(), route.clone());
            route
        });
        *backends = used;
        RoutingTable { exact, wildcard, apps, platform }
    }

    /// Every routed host with its app and backend addresses, sorted by host.
    pub fn describe(&self) -> Vec<(String, String, Vec<SocketAddr>)> {
        let mut out: Vec<_> = self
            .exact
            .iter()
            .map(|(h, r)| (h.to_string(), r))
            .chain(self.wildcard.iter().map(|(h, r)| (format!("*.{h}"), r)))
            .map(|(h, r)| (h, r.app.to_string(), r.backends.iter().map(|b| b.addr).collect()))
            .collect();
        out.sort();
        out
    }
}

/// Normalises a `Host` header value for lookup: drops the port and a trailing dot and
/// lowercases, allocating only when the host has upper-case letters.
pub(crate) fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: `[::1]:8080`.
        match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deis_core::testing::{app_name, process_type};
    use std::time::Duration;

    fn pool() -> PoolSettings {
        PoolSettings {
            workers: 1,
            max_idle: 4,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
        }
    }

    fn ep(app: &str, n: u32, proc_type: &str, port: u16) -> (String, Endpoint) {
        let unit = format!("{app}.{proc_type}.{n}");
        let key = deis_core::store::records::endpoint_key(app, &unit, 1);
        let ep = Endpoint {
            app: app_name(app),
            unit,
            proc_type: process_type(proc_type),
            release: 1,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            node: "local".into(),
        };
        (key, ep)
    }

    fn state() -> RouteState {
        let mut s = RouteState::default();
        s.apps.extend(["hello", "other"].map(|a| (a.to_string(), AppTraffic::default())));
        s.domains.insert("www.example.com".into(), ("www.example.com".into(), "hello".into()));
        s.domains.insert("*.wild.test".into(), ("*.wild.test".into(), "other".into()));
        s.domains.insert("short".into(), ("short".into(), "other".into()));
        s.domains.insert("hijack.deis.test".into(), ("hijack.deis.test".into(), "other".into()));
        s.apps.insert("hijack".into(), AppTraffic::default());
        s.endpoints.extend([ep("hello", 1, "web", 1001), ep("hello", 2, "web", 1002), ep("hello", 1, "worker", 1003)]);
        s.endpoints.extend([ep("other", 1, "cmd", 2001)]);
        s
    }

    #[test]
    fn normalises_hosts() {
        assert_eq!(normalize_host("Hello.Deis.Test:8080"), "hello.deis.test");
        assert_eq!(normalize_host("hello.deis.test."), "hello.deis.test");
        assert_eq!(normalize_host("hello.deis.test"), "hello.deis.test");
        assert!(matches!(normalize_host("hello.deis.test"), Cow::Borrowed(_)));
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
    }

    #[test]
    fn routes_default_custom_and_wildcard_hosts() {
        let mut backends = HashMap::new();
        let t = RoutingTable::build(&state(), "deis.test", None, &RoutingTable::default(), &mut backends, pool());
        let app = |h: &str| t.lookup(h).map(|r| r.app.to_string());
        assert_eq!(app("hello.deis.test").as_deref(), Some("hello"));
        assert_eq!(app("www.example.com").as_deref(), Some("hello"));
        assert_eq!(app("a.wild.test").as_deref(), Some("other"));
        assert_eq!(app("a.b.wild.test"), None, "a wildcard matches one label");
        assert_eq!(app("wild.test"), None);
        assert_eq!(app("short.deis.test").as_deref(), Some("other"));
        assert_eq!(app("hijack.deis.test").as_deref(), Some("hijack"), "default names win over custom domains");
        assert_eq!(app("nope.deis.test"), None);
        let hello = t.lookup("hello.deis.test").unwrap();
        let ports: Vec<u16> = hello.backends.iter().map(|b| b.addr.port()).collect();
        assert_eq!(ports, [1001, 1002], "only web endpoints are routed");
        assert_eq!(t.lookup("a.wild.test").unwrap().backends.len(), 1, "cmd endpoints are routed");
        assert!(t.lookup("hijack.deis.test").unwrap().backends.is_empty());
        assert_eq!(backends.len(), 3);
    }

    #[test]
    fn rebuild_reuses_unchanged_routes_and_backends() {
        let mut backends = HashMap::new();
        let s = state();
        let t1 = RoutingTable::build(&s, "deis.test", None, &RoutingTable::default(), &mut backends, pool());
        let r1 = t1.lookup("hello.deis.test").unwrap().clone();
        r1.next_start();
        let t2 = RoutingTable::build(&s, "deis.test", None, &t1, &mut backends, pool());
        assert!(Arc::ptr_eq(&r1, t2.lookup("hello.deis.test").unwrap()));

        let mut s2 = s.clone();
        let (k, e) = ep("hello", 3, "web", 1004);
        s2.endpoints.insert(k, e);
        let t3 = RoutingTable::build(&s2, "deis.test", None, &t2, &mut backends, pool());
        let r3 = t3.lookup("hello.deis.test").unwrap();
        assert!(!Arc::ptr_eq(&r1, r3));
        assert!(Arc::ptr_eq(&r1.backends[0], &r3.backends[0]), "pooled backends are kept");
        assert_eq!(r3.position(), 1, "round-robin position is kept");

        s2.endpoints.clear();
        let t4 = RoutingTable::build(&s2, "deis.test", None, &t3, &mut backends, pool());
        assert!(t4.lookup("hello.deis.test").unwrap().backends.is_empty());
        assert!(backends.is_empty(), "unused backends are dropped");
    }

    #[test]
    fn unroutable_apps_have_no_hosts_and_policy_changes_rebuild_the_route() {
        let mut backends = HashMap::new();
        let mut s = state();
        let t1 = RoutingTable::build(&s, "deis.test", None, &RoutingTable::default(), &mut backends, pool());
        let r1 = t1.lookup("hello.deis.test").unwrap().clone();
        r1.next_start();
        let policy = Arc::new(TrafficPolicy { maintenance: true, ..TrafficPolicy::default() });
        s.apps.insert("hello".into(), AppTraffic { routable: true, policy: Some(policy.clone()) });
        let t2 = RoutingTable::build(&s, "deis.test", None, &t1, &mut backends, pool());
        let r2 = t2.lookup("www.example.com").unwrap();
        assert_eq!(r2.policy.as_deref(), Some(&*policy));
        assert!(Arc::ptr_eq(&r1.backends[0], &r2.backends[0]), "backends and their pools are kept");
        assert_eq!(r2.position(), 1, "round-robin position is kept");

        s.apps.insert("hello".into(), AppTraffic { routable: false, policy: None });
        let t3 = RoutingTable::build(&s, "deis.test", None, &t2, &mut backends, pool());
        assert!(t3.lookup("hello.deis.test").is_none() && t3.lookup("www.example.com").is_none());
        assert_eq!(t3.lookup("a.wild.test").unwrap().app.as_ref(), "other", "other apps are still routed");
    }

    #[test]
    fn platform_host_wins_over_apps_and_custom_domains_and_is_kept_across_rebuilds() {
        let mut s = state();
        // Neither a custom domain nor a (legacy, pre-validation) app may take the host.
        s.domains.insert("deis.deis.test".into(), ("deis.deis.test".into(), "hello".into()));
        s.domains.insert("*.deis.test".into(), ("*.deis.test".into(), "hello".into()));
        s.apps.insert("deis".into(), AppTraffic::default());
        let controller = SocketAddr::from(([127, 0, 0, 1], 8000));
        let platform = ("Deis.Deis.Test.".to_string(), controller);
        let mut backends = HashMap::new();
        let t1 = RoutingTable::build(&s, "deis.test", Some(&platform), &RoutingTable::default(), &mut backends, pool());
        let route = t1.lookup("deis.deis.test").expect("the platform host is routed");
        assert_eq!(&*route.app, PLATFORM_APP);
        assert_eq!(route.backends.iter().map(|b| b.addr).collect::<Vec<_>>(), [controller]);
        assert_eq!(t1.lookup("hello.deis.test").unwrap().app.as_ref(), "hello", "apps are still routed");
        assert!(backends.contains_key(&controller));

        let t2 = RoutingTable::build(&s, "deis.test", Some(&platform), &t1, &mut backends, pool());
        assert!(Arc::ptr_eq(route, t2.lookup("deis.deis.test").unwrap()), "the route (and its pool) is kept");

        let t3 = RoutingTable::build(&s, "deis.test", None, &t2, &mut backends, pool());
        assert!(t3.lookup("deis.deis.test").unwrap().backends.is_empty(), "without it, the host is an app's again");
        assert!(!backends.contains_key(&controller));
    }
}
