//! End-to-end tests: real `deisd` and `deis` binaries (and real etcd, Docker, registry,
//! PostgreSQL, Redis, Chromium where a suite needs them) on loopback.
//!
//! One test binary with a module per suite: each integration-test binary links the whole
//! dependency graph, so one binary instead of twenty saves minutes of linking and
//! gigabytes of disk. nextest still runs every test in its own process.

mod access;
mod addons;
mod autoscale;
mod build_limits;
mod builder;
mod daemon;
mod dashboard;
mod docker;
mod etcd;
mod https;
mod isolation;
mod listeners;
mod log_hardening;
mod log_token;
mod logs;
mod migrate;
mod platform;
mod push;
mod telemetry;
mod tty;
mod updates;
