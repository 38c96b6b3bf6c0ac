//! Test support shared by every crate of the Deis workspace: free loopback ports
//! ([`net`]), starters for the real services tests talk to ([`service`]: [`redis`],
//! [`docker`], [`etcd`], [`registry`], [`postgres`]; an nginx [`nginx::LoadBalancer`]), polling a condition until a deadline ([`wait_for`],
//! [`eventually`]), one raw HTTP/1.1 client ([`http`]) and a look at this machine's
//! processes ([`proc`]), and container images written offline ([`image`]).
//!
//! It depends on no Deis crate, so `deis-core` itself (its tests and its conformance
//! suites behind the `test-util` feature) can use it.

pub mod docker;
pub mod etcd;
pub mod http;
pub mod image;
pub mod metrics;
pub mod net;
pub mod nginx;
pub mod postgres;
pub mod proc;
pub mod redis;
pub mod registry;
pub mod service;
#[cfg(feature = "tls")]
pub mod tls;
mod wait;
pub mod wrk;

pub use net::{free_addr, free_port};
pub use service::{Service, skip_without};
pub use wait::{Attempt, eventually, wait_for};
