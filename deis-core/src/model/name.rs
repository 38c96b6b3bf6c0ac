//! Names that are checked once, where they enter: [`AppName`] and [`ProcessType`].
//!
//! Both can only be made through validation (`TryFrom`, `FromStr`, serde), so code that
//! holds one never checks it again, and an invalid name can't reach the platform. On
//! the wire and in stored records they are plain JSON strings.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use super::validate::{self, ValidationError};

/// Defines a string newtype whose values all passed `$check`.
macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `name` and wraps it.
            pub fn new(name: impl Into<String>) -> Result<Self, ValidationError> {
                let name = name.into();
                $check(&name)?;
                Ok(Self(name))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(name: &str) -> Result<Self, ValidationError> {
                Self::new(name)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(name: String) -> Result<Self, ValidationError> {
                Self::new(name)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(name: &str) -> Result<Self, ValidationError> {
                Self::new(name)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = String::deserialize(d)?;
                Self::new(name).map_err(|e| serde::de::Error::custom(e.message))
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

validated_name!(
    /// An app's name (its id in the API): a DNS label, `^[a-z]([a-z0-9-]*[a-z0-9])?$`, at
    /// most 63 characters (see [`validate::app_name_syntax`]; errors are of field `id`).
    ///
    /// Names the platform keeps for itself ([`validate::RESERVED_APP_NAMES`]) are valid
    /// names: creating an app refuses them, but an `AppName` may hold one (a lookup of
    /// `deis` is simply not found).
    ///
    /// ```
    /// use deis_core::AppName;
    /// let app: AppName = "hello".parse().unwrap();
    /// assert_eq!(app, "hello");
    /// assert_eq!(serde_json::to_string(&app).unwrap(), "\"hello\"");
    /// assert!(AppName::new("Hello_World").is_err());
    /// ```
    AppName,
    validate::app_name_syntax
);

validated_name!(
    /// A process type of an app (`web`, `worker`, `clock-2`): `^[a-z0-9]+(-[a-z0-9]+)*$`, at
    /// most 63 characters (see [`validate::proc_type`]; errors are of field `type`).
    ///
    /// ```
    /// use deis_core::ProcessType;
    /// let web = ProcessType::new("web").unwrap();
    /// assert_eq!(web.as_str(), "web");
    /// assert!("Web".parse::<ProcessType>().is_err());
    /// ```
    ProcessType,
    validate::proc_type
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn names_are_checked_on_every_way_in() {
        assert_eq!(AppName::new("hello").unwrap().as_str(), "hello");
        assert_eq!(AppName::try_from("a-1").unwrap(), "a-1");
        assert_eq!("deis".parse::<AppName>().unwrap(), "deis", "reserved names are still names");
        let e = AppName::try_from(String::from("Bad_Name")).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("id", "App name can only contain a-z (lowercase), 0-9 and hyphens")
        );
        assert_eq!(AppName::new("").unwrap_err().message, "This field may not be blank.");
        assert!(AppName::new("a".repeat(64)).is_err());
        let e = serde_json::from_str::<AppName>("\"UP\"").unwrap_err();
        assert!(e.to_string().contains("App name can only contain"), "{e}");
        assert_eq!(ProcessType::new("clock-2").unwrap(), "clock-2");
        assert_eq!(ProcessType::new("a--b").unwrap_err().field, "type");
        assert!(serde_json::from_str::<ProcessType>("\"web\"").is_ok());
        assert!(serde_json::from_str::<ProcessType>("\"We b\"").is_err());
    }

    #[test]
    fn names_read_as_text() {
        let app = AppName::new("hello").unwrap();
        assert_eq!(app.len(), 5, "derefs to str");
        assert_eq!(format!("{app}.web.1"), "hello.web.1");
        assert_eq!(String::from(app.clone()), "hello");
        let owned = String::from("hello");
        assert!("hello" == app);
        assert!(app == *"hello");
        assert!(app == owned);
        assert!(owned == app);
        let formation = BTreeMap::from([(ProcessType::new("web").unwrap(), 2u32)]);
        assert_eq!(formation.get("web"), Some(&2), "maps keyed by a name are looked up by str");
        assert_eq!(serde_json::to_string(&formation).unwrap(), r#"{"web":2}"#);
    }
}
