use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A platform user. The password hash never leaves the platform: the API renders
/// users through [`User::public`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Login name.
    pub username: String,
    /// Email address (may be empty).
    #[serde(default)]
    pub email: String,
    /// Admins may manage every app and user; the first user registered is one.
    pub is_superuser: bool,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Registration time.
    pub date_joined: Timestamp,
    /// Last successful login.
    #[serde(default)]
    pub last_login: Option<Timestamp>,
    /// A disabled user (`deis users:disable`) can't log in and their tokens are refused.
    #[serde(default = "active", skip_serializing_if = "is_true")]
    pub is_active: bool,
}

fn active() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl User {
    /// The user as the API shows it (Workflow `User` object, no password).
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "username": self.username,
            "email": self.email,
            "first_name": "",
            "last_name": "",
            "is_superuser": self.is_superuser,
            "is_staff": self.is_superuser,
            "is_active": self.is_active,
            "groups": [],
            "user_permissions": [],
            "last_login": self.last_login,
            "date_joined": self.date_joined,
        })
    }
}
