//! `PORT` allocation: a free loopback port per unit, never the same for two live units.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// How many ports the allocator asks the kernel for before giving up.
const ATTEMPTS: usize = 64;

/// Hands out loopback ports: each is free when handed out (the kernel gave it for
/// `127.0.0.1:0`) and is not handed out again until released.
#[derive(Debug, Default)]
pub(crate) struct PortAllocator {
    taken: Mutex<BTreeSet<u16>>,
}

impl PortAllocator {
    /// A free port, reserved until [`release`](Self::release).
    pub(crate) fn allocate(&self) -> io::Result<u16> {
        // Keep rejected listeners open while asking again so the kernel can't repeat them.
        let mut held = Vec::new();
        for _ in 0..ATTEMPTS {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let port = listener.local_addr()?.port();
            if self.taken.lock().unwrap().insert(port) {
                return Ok(port);
            }
            held.push(listener);
        }
        Err(io::Error::other(format!("no free loopback port found in {ATTEMPTS} attempts")))
    }

    /// Reserves `port`, found in use by a unit already (an adopted container).
    pub(crate) fn hold(&self, port: u16) {
        self.taken.lock().unwrap().insert(port);
    }

    /// Makes `port` available again.
    pub(crate) fn release(&self, port: u16) {
        self.taken.lock().unwrap().remove(&port);
    }

    #[cfg(test)]
    pub(crate) fn taken(&self) -> usize {
        self.taken.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_a_port_twice() {
        let ports = PortAllocator::default();
        let got: Vec<u16> = (0..50).map(|_| ports.allocate().unwrap()).collect();
        let unique: BTreeSet<u16> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len());
        ports.release(got[0]);
        assert_eq!(ports.taken(), 49);
    }
}
