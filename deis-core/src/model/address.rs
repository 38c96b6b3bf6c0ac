//! Client address ranges for an app's allow-list (`deis whitelist:add 10.0.0.0/8`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::ValidationError;

/// An IPv4 or IPv6 network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`); a bare
/// address is a network of one (`/32`, `/128`). Host bits are cleared when parsed,
/// so `10.1.2.3/8` and `10.0.0.0/8` are the same range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// The range `network/prefix`; host bits of `network` are cleared.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Self, ValidationError> {
        let max = max_prefix(&network);
        if prefix > max {
            return Err(invalid(&format!("{network}/{prefix}"), &format!("the prefix length must be at most {max}")));
        }
        Ok(Self { network: mask(network, prefix), prefix })
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` is inside the range. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, what a dual-stack socket reports) matches IPv4 ranges.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => mask(addr, self.prefix) == self.network,
            _ => false,
        }
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            IpAddr::V6((bits & m).into())
        }
    }
}

fn invalid(given: &str, why: &str) -> ValidationError {
    ValidationError::new("addresses", format!("{given:?} is not an IP address or CIDR range ({why})"))
}

impl FromStr for AddressRange {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 64 {
            return Err(invalid(&s.chars().take(64).collect::<String>(), "too long"));
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr =
            addr.parse().map_err(|_| invalid(s, "write e.g. 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32"))?;
        let prefix = match prefix {
            None => max_prefix(&network),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse().map_err(|_| invalid(s, "the prefix length is not a number"))?
            }
            Some(_) => return Err(invalid(s, "the prefix length is not a number")),
        };
        Self::new(network, prefix)
            .map_err(|_| invalid(s, &format!("the prefix length must be at most {}", max_prefix(&network))))
    }
}

impl fmt::Display for AddressRange {
    /// A single address prints bare (`203.0.113.7`), a network with its prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == max_prefix(&self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

impl serde::Serialize for AddressRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for AddressRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn r(s: &str) -> AddressRange {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_networks() {
        assert_eq!(r("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(r("203.0.113.7").to_string(), "203.0.113.7");
        assert_eq!(r("203.0.113.7/32").to_string(), "203.0.113.7");
        assert_eq!(r("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(r("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in
            ["", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/8", "host", "10.0.0.0/+8"]
        {
            let e = bad.parse::<AddressRange>().unwrap_err();
            assert_eq!(e.field, "addresses", "{bad}");
            assert!(e.message.contains("not an IP address or CIDR range"), "{bad}: {e}");
        }
    }

    #[test]
    fn containment() {
        assert!(r("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!r("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(r("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")), "IPv4-mapped addresses match IPv4 ranges");
        assert!(!r("10.0.0.0/8").contains(ip("::1")));
        assert!(r("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!r("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(r("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(r("127.0.0.1").contains(ip("127.0.0.1")) && !r("127.0.0.1").contains(ip("127.0.0.2")));
    }

    proptest! {
        #[test]
        fn v4_display_round_trips_and_contains_its_network(a in any::<u32>(), p in 0u8..=32, probe in any::<u32>()) {
            let range = AddressRange::new(IpAddr::V4(Ipv4Addr::from(a)), p).unwrap();
            prop_assert_eq!(range.to_string().parse::<AddressRange>().unwrap(), range);
            prop_assert!(range.contains(IpAddr::V4(Ipv4Addr::from(a))));
            // Agrees with a shift-based definition of "same top p bits".
            let same = p == 0 || (a >> (32 - u32::from(p))) == (probe >> (32 - u32::from(p)));
            prop_assert_eq!(range.contains(IpAddr::V4(Ipv4Addr::from(probe))), same);
        }

        #[test]
        fn v6_display_round_trips(a in any::<u128>(), p in 0u8..=128) {
            let range = AddressRange::new(IpAddr::V6(Ipv6Addr::from(a)), p).unwrap();
            prop_assert_eq!(range.to_string().parse::<AddressRange>().unwrap(), range);
            prop_assert!(range.contains(IpAddr::V6(Ipv6Addr::from(a))) || Ipv6Addr::from(a).to_ipv4_mapped().is_some());
        }

        #[test]
        fn parsing_any_text_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<AddressRange>();
        }
    }
}
