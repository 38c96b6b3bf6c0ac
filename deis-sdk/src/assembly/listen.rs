//! Where the platform's listeners come from: an address to bind, a socket bound by the
//! caller (socket activation, tests that pick their ports), or none at all.

use std::net::SocketAddr;

/// One TCP listener of the platform (the controller API or the router).
#[derive(Debug)]
pub enum Listen {
    /// No listener: the part is not served.
    Off,
    /// Bind this address when the platform starts (port 0 picks a free port).
    Addr(SocketAddr),
    /// A listener the caller bound. It is switched to non-blocking mode.
    Bound(std::net::TcpListener),
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

impl From<std::net::TcpListener> for Listen {
    fn from(listener: std::net::TcpListener) -> Self {
        Self::Bound(listener)
    }
}

impl Listen {
    /// Binds (or adopts) the listener; `None` for [`Listen::Off`].
    pub(crate) async fn open(self) -> std::io::Result<Option<tokio::net::TcpListener>> {
        match self {
            Self::Off => Ok(None),
            Self::Addr(addr) => tokio::net::TcpListener::bind(addr).await.map(Some),
            Self::Bound(listener) => {
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener).map(Some)
            }
        }
    }

    /// The address to name in errors.
    pub(crate) fn describe(&self) -> Option<SocketAddr> {
        match self {
            Self::Off => None,
            Self::Addr(addr) => Some(*addr),
            Self::Bound(listener) => listener.local_addr().ok(),
        }
    }
}

/// The syslog listeners of the platform: app logs over UDP and TCP.
#[derive(Debug)]
pub enum SyslogListen {
    /// No syslog listener (units' output still reaches the log store directly).
    Off,
    /// Bind UDP and TCP on this address when the platform starts.
    Addr(SocketAddr),
    /// Sockets the caller bound; either may be absent.
    Bound {
        /// The UDP socket (one message per datagram).
        udp: Option<std::net::UdpSocket>,
        /// The TCP listener (octet counting or LF framing).
        tcp: Option<std::net::TcpListener>,
    },
}

impl From<SocketAddr> for SyslogListen {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

impl SyslogListen {
    /// The address to name in errors.
    pub(crate) fn describe(&self) -> Option<SocketAddr> {
        match self {
            Self::Off => None,
            Self::Addr(addr) => Some(*addr),
            Self::Bound { udp, tcp } => udp
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .or_else(|| tcp.as_ref().and_then(|l| l.local_addr().ok())),
        }
    }
}

/// An address clients on this host can connect to: `0.0.0.0:p` / `[::]:p` become the
/// loopback address with the same port.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bound_listener_is_adopted_with_its_port() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listen = Listen::from(std_listener);
        assert_eq!(listen.describe(), Some(addr));
        let listener = listen.open().await.unwrap().unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
        let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        assert_eq!(accepted.unwrap().1, client.unwrap().local_addr().unwrap());
    }

    #[tokio::test]
    async fn off_opens_nothing() {
        assert!(Listen::Off.open().await.unwrap().is_none());
        assert_eq!(SyslogListen::Off.describe(), None);
    }

    #[test]
    fn unspecified_addresses_become_loopback() {
        assert_eq!(reachable("0.0.0.0:80".parse().unwrap()), "127.0.0.1:80".parse().unwrap());
        assert_eq!(reachable("[::]:80".parse().unwrap()), "[::1]:80".parse().unwrap());
        assert_eq!(reachable("10.1.2.3:80".parse().unwrap()), "10.1.2.3:80".parse().unwrap());
    }
}
