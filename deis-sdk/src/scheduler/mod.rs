//! Container backends of the [`Scheduler`](deis_core::Scheduler) trait, each behind its
//! feature: [`docker`] (one or more Docker engines, placement by
//! [`deis_core::scheduler::placement`]).

#[cfg(feature = "docker")]
pub mod docker;
