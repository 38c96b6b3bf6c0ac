//! The domain model: users, apps, builds, config, releases, formation, units.
//!
//! Records are plain serde structs whose JSON form is exactly what the Deis Workflow
//! controller API (v2.3) returns, so the HTTP layer can serialise them as they are.
//! Every name and value that comes from outside is checked by [`validate`] with an
//! error that says what is wrong and what would be right.

mod address;
mod app;
mod build;
mod cert;
mod config;
mod identity;
mod key;
pub mod limits;
mod name;
pub mod procfile;
mod release;
mod settings;
mod unit;
mod user;
pub mod validate;

pub use address::AddressRange;
pub use app::{App, Domain};
pub use build::{Build, BuildSource};
pub use cert::{
    CertAttachment, Certificate, CertificateInfo, CertificateView, MAX_CERT_CHAIN_BYTES, MAX_CERT_CHAIN_LEN,
    MAX_CERT_KEY_BYTES, MAX_CERT_NAME_LEN, cert_input_sizes, cert_name,
};
pub use config::{
    ChangeSummary, Config, ConfigError, ConfigPatch, DEFAULT_HEALTHCHECK_TYPE, ExecProbe, Healthcheck, HttpGetProbe,
    HttpHeader, Probe, ProbeAction, TcpSocketProbe,
};
pub use identity::{AppIdentity, DEFAULT_IDENTITY_RANGE, IdentityRange, InvalidIdentityRange};
pub use key::{MAX_KEY_ID_LEN, MAX_PUBLIC_KEY_BYTES, PublicKey, SshKey, fingerprint_of_blob, key_id};
pub use name::{AppName, ProcessType};
pub use release::Release;
pub use settings::{AppSettings, Autoscale, MAX_LABELS, MAX_WHITELIST, SettingsError, SettingsPatch};
pub use unit::{Unit, UnitState};
pub use user::User;
pub use validate::ValidationError;
