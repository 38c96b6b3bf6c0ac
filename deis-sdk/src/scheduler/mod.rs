//! [`deis_core::scheduler`] (the `Scheduler` trait, the local scheduler, the placement
//! engine), re-exported, plus the container backends, each behind its feature:
//! [`docker`] (one or more Docker engines, units placed over them), [`swarm`] (Docker
//! Swarm services).

pub use deis_core::scheduler::*;

#[cfg(feature = "docker")]
pub mod docker;

#[cfg(feature = "swarm")]
pub mod swarm;
