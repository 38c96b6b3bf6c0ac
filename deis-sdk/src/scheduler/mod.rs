//! [`deis_core::scheduler`] (the `Scheduler` trait, the local scheduler, the placement
//! engine), re-exported, plus the container backends, each behind its feature:
//! [`docker`] (one or more Docker engines, units placed over them), [`swarm`] (Docker
//! Swarm services), and two previews driving an orchestrator: [`kubernetes`] (a
//! Deployment per unit) and [`marathon`] (a Marathon app per unit).
//!
//! The previews give each unit slot (`<app>.<type>.<n>`) its own engine object running
//! one instance, rather than one object per process type with `count` replicas: a Deis
//! unit has a stable name in its environment (`DEIS_UNIT`) and a number (scaling down
//! removes the highest), which interchangeable replicas cannot carry. The engine rolls
//! each object new before old; deis rolls the slots one at a time.

pub use deis_core::scheduler::*;

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
#[cfg(feature = "marathon")]
pub mod marathon;
#[cfg(any(feature = "kubernetes", feature = "marathon"))]
mod slots;
#[cfg(feature = "swarm")]
pub mod swarm;

/// The stack image source builds run on unless configured otherwise (built offline as
/// `PROTOCOLS.md` describes: Debian bookworm with python3).
pub const DEFAULT_STACK_IMAGE: &str = "deis/stack:bookworm";
