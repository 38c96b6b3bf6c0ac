//! The domain model: users, apps, builds, config, releases, formation, units.
//!
//! Records are plain serde structs whose JSON form is exactly what the Deis Workflow
//! controller API (v2.3) returns, so the HTTP layer can serialise them as they are.
//! Every name and value that comes from outside is checked by [`validate`] with an
//! error that says what is wrong and what would be right.

mod app;
mod build;
mod config;
mod identity;
pub mod limits;
mod name;
pub mod procfile;
mod release;
mod unit;
mod user;
pub mod validate;

pub use app::{App, Domain};
pub use build::{Build, BuildSource};
pub use config::{
    ChangeSummary, Config, ConfigError, ConfigPatch, ExecProbe, Healthcheck, HttpGetProbe, HttpHeader, Probe,
    ProbeAction, TcpSocketProbe,
};
pub use identity::{AppIdentity, DEFAULT_IDENTITY_RANGE, IdentityRange, InvalidIdentityRange};
pub use name::{AppName, ProcessType};
pub use release::Release;
pub use unit::{Unit, UnitState};
pub use user::User;
pub use validate::ValidationError;
