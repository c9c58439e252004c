//! Socket plumbing: spreading connections over loopback source addresses and raising the file
//! descriptor limit.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use tokio::net::{TcpSocket, TcpStream};

/// Loopback source addresses used round-robin, so that one destination port can take more
/// connections than one source address has ephemeral ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAddrs {
    /// 127.0.0.1, 127.0.0.2, ...: Linux routes all of 127.0.0.0/8 to `lo` without setup.
    addrs: Vec<Ipv4Addr>,
}

impl SourceAddrs {
    /// The first `count` addresses from 127.0.0.1 (at least one, at most 254).
    pub fn loopback(count: u8) -> Self {
        let count = count.clamp(1, 254);
        SourceAddrs {
            addrs: (1..=count)
                .map(|last| Ipv4Addr::new(127, 0, 0, last))
                .collect(),
        }
    }

    /// The source address for connection number `index`.
    pub fn for_index(&self, index: usize) -> Ipv4Addr {
        self.addrs[index % self.addrs.len()]
    }

    /// How many addresses are in use.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Never true: there is always at least one address.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

/// Opens a TCP connection from `source` (any port) to `dest`.
///
/// The socket is bound before connecting with `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks
/// the port at connect time and can reuse it towards other destinations.
pub async fn connect_from(source: Ipv4Addr, dest: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Best effort: without the option, bind still works but reserves the port eagerly.
    let _ = setsockopt(&socket, IpBindAddressNoPort, &true);
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(dest).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Raises the soft open-files limit to the hard limit and returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses_are_spread_round_robin() {
        let addrs = SourceAddrs::loopback(4);
        let picked: Vec<_> = (0..9).map(|i| addrs.for_index(i).octets()[3]).collect();
        assert_eq!(picked, [1, 2, 3, 4, 1, 2, 3, 4, 1]);
        assert!(addrs.for_index(7).is_loopback());
        assert_eq!(SourceAddrs::loopback(0).len(), 1);
        assert_eq!(SourceAddrs::loopback(255).len(), 254);
    }

    #[tokio::test]
    async fn connects_from_a_chosen_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = listener.local_addr().unwrap();
        let stream = connect_from(Ipv4Addr::new(127, 0, 0, 3), dest)
            .await
            .unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(
            stream.local_addr().unwrap().ip(),
            Ipv4Addr::new(127, 0, 0, 3)
        );
        assert_eq!(peer.ip(), Ipv4Addr::new(127, 0, 0, 3));
    }
}
