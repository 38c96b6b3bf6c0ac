//! The identity an app's units and sessions run as: a uid and gid of its own, from a
//! range the operator sets aside (`deisd --app-uid-range`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The uid and gid an app's processes run as (the gid is the uid's number: a group of
/// the app's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppIdentity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl AppIdentity {
    /// The identity with uid and gid `id`.
    pub fn of(id: u32) -> Self {
        Self { uid: id, gid: id }
    }
}

impl fmt::Display for AppIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// The ids apps may get: `first..=last`, none of them 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRange {
    first: u32,
    last: u32,
}

/// Default [`IdentityRange`]: 100 000 ids above the usual system and user ranges (and
/// apart from the subordinate ids container engines hand out from 100 000).
pub const DEFAULT_IDENTITY_RANGE: IdentityRange = IdentityRange { first: 200_000, last: 299_999 };

/// Longest `FIRST-LAST` accepted.
const MAX_RANGE_TEXT: usize = 32;

/// A `FIRST-LAST` that is not a usable range of ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?}: {why}; give FIRST-LAST, e.g. 200000-299999 (ids unused on this machine, not 0)")]
pub struct InvalidIdentityRange {
    /// What was given (cut to 32 characters).
    pub given: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl IdentityRange {
    /// `first..=last`; `None` if it is empty or starts at 0 (root).
    pub fn new(first: u32, last: u32) -> Option<Self> {
        (first > 0 && first <= last && last < u32::MAX).then_some(Self { first, last })
    }

    /// The first id.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// The last id.
    pub fn last(&self) -> u32 {
        self.last
    }

    /// Whether `id` is in the range.
    pub fn contains(&self, id: u32) -> bool {
        (self.first..=self.last).contains(&id)
    }

    /// How many ids it holds.
    pub fn len(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    /// Never empty (kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Default for IdentityRange {
    fn default() -> Self {
        DEFAULT_IDENTITY_RANGE
    }
}

impl fmt::Display for IdentityRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for IdentityRange {
    type Err = InvalidIdentityRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| InvalidIdentityRange { given: s.chars().take(MAX_RANGE_TEXT).collect(), why };
        if s.len() > MAX_RANGE_TEXT {
            return Err(err("too long"));
        }
        let (a, b) = s.trim().split_once('-').ok_or_else(|| err("no `-` between the first and last id"))?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(err("the ids must be whole numbers"));
        }
        let (first, last) = (
            a.parse::<u32>().map_err(|_| err("an id is too large"))?,
            b.parse::<u32>().map_err(|_| err("an id is too large"))?,
        );
        if first == 0 {
            return Err(err("0 is root"));
        }
        Self::new(first, last).ok_or_else(|| err("the range is empty"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_parse() {
        let r: IdentityRange = "200000-299999".parse().unwrap();
        assert_eq!((r.first(), r.last(), r.len()), (200_000, 299_999, 100_000));
        assert!(r.contains(200_000) && r.contains(299_999) && !r.contains(300_000));
        assert_eq!(r.to_string(), "200000-299999");
        assert_eq!("5-5".parse::<IdentityRange>().unwrap().len(), 1);
        for bad in ["", "1", "0-10", "10-5", "a-b", "-5", "5-", "1-4294967296", "1 - 5", &"9".repeat(40)] {
            let e = bad.parse::<IdentityRange>().unwrap_err();
            assert!(e.to_string().contains("FIRST-LAST"), "{bad}: {e}");
        }
        assert_eq!(AppIdentity::of(7).to_string(), "7:7");
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in ".{0,40}", a in 1u32..1_000_000, n in 0u32..1_000_000) {
            let _ = s.parse::<IdentityRange>();
            let r = IdentityRange::new(a, a + n).unwrap();
            prop_assert_eq!(r.to_string().parse::<IdentityRange>().unwrap(), r);
        }
    }
}
