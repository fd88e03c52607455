//! Transparent capture: finding where a redirected connection was really going.
//!
//! `weft init-iptables` (see [`iptables`]) installs NAT rules that `REDIRECT` a pod's TCP
//! traffic to the proxy's capture ports. The kernel rewrites the destination, so the accepted
//! socket's local address is the proxy's own port; the address the application dialled lives
//! in the conntrack entry and is read back with `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for
//! IPv6).

use std::io;
use std::net::{IpAddr, SocketAddr};

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt, SockaddrIn, SockaddrIn6};

pub mod iptables;

/// The destination a captured connection was originally addressed to.
///
/// Returns `Ok(None)` when the connection was not redirected: either there is no NAT entry
/// for it (`ENOENT`, e.g. conntrack is not tracking it) or the original destination equals the
/// socket's local address, which is what the kernel reports when a client dialled the capture
/// port directly. Callers treat `None` as "not captured" rather than looping back to
/// themselves.
pub fn original_dst(stream: &tokio::net::TcpStream) -> io::Result<Option<SocketAddr>> {
    let local = stream.local_addr()?;
    let original = match local.ip() {
        // A dual-stack socket accepting an IPv4 client reports a v4-mapped local address; the
        // conntrack entry is an IPv4 one, so the IPv4 option is the one that answers.
        IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none() => {
            getsockopt(stream, sockopt::Ip6tOriginalDst).map(|raw| SocketAddr::from(SockaddrIn6::from(raw)))
        }
        _ => getsockopt(stream, sockopt::OriginalDst).map(|raw| SocketAddr::from(SockaddrIn::from(raw))),
    };
    match original {
        Ok(addr) if same_socket_addr(addr, local) => Ok(None),
        Ok(addr) => Ok(Some(addr)),
        // ENOENT: conntrack has no NAT entry for this flow, i.e. it was never redirected.
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Marks every packet the socket sends with `mark` (`SO_MARK`).
///
/// Used when the proxy's own outbound traffic is excluded from capture by mark (Linkerd's way,
/// `IptablesOptions::proxy_mark`) rather than by uid. Needs `CAP_NET_ADMIN`.
pub fn set_mark(socket: &socket2::Socket, mark: u32) -> io::Result<()> {
    socket.set_mark(mark)
}

/// Compares addresses treating `::ffff:a.b.c.d` and `a.b.c.d` as equal, since the original
/// destination of a v4 flow on a dual-stack socket comes back as plain IPv4.
fn same_socket_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn direct_connection_has_no_original_dst() {
        // Dialling a listener directly creates no NAT entry, so there is nothing to report.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.expect("connect");
        let (server, _) = accepted.expect("accept");
        assert_eq!(original_dst(&server).expect("getsockopt"), None);
    }

    #[tokio::test]
    async fn direct_ipv6_connection_has_no_original_dst() {
        let listener = match TcpListener::bind("[::1]:0").await {
            Ok(listener) => listener,
            Err(e) => {
                let why = format!("no IPv6 loopback on this machine ({e})");
                weft_test_support::privilege::cannot_run("direct_ipv6_connection_has_no_original_dst", &why);
                return;
            }
        };
        let addr = listener.local_addr().expect("local addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.expect("connect");
        let (server, _) = accepted.expect("accept");
        assert_eq!(original_dst(&server).expect("getsockopt"), None);
    }

    #[test]
    fn v4_mapped_addresses_compare_equal() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().expect("addr");
        let plain: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        assert!(same_socket_addr(mapped, plain));
        assert!(!same_socket_addr(plain, "10.0.0.1:81".parse().expect("addr")));
    }

    #[test]
    fn set_mark_as_root_marks_the_socket() {
        if !weft_test_support::privilege::require_root(
            "set_mark_as_root_marks_the_socket",
            "(CAP_NET_ADMIN) for SO_MARK",
        ) {
            return;
        }
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        assert_eq!(socket.mark().expect("SO_MARK"), 0);
        set_mark(&socket, 0x539).expect("root may set SO_MARK");
        // Read back from the kernel: the mark really is on the socket.
        assert_eq!(socket.mark().expect("SO_MARK"), 0x539);
    }

    #[test]
    fn set_mark_without_privilege_is_refused_as_such() {
        if weft_test_support::privilege::is_root() {
            // Root has CAP_NET_ADMIN: the refusal cannot be seen here (the test above runs).
            eprintln!("skipped set_mark_without_privilege_is_refused_as_such: running as root");
            return;
        }
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        // Without CAP_NET_ADMIN the kernel refuses; that is the documented requirement.
        let err = set_mark(&socket, 0x539).expect_err("SO_MARK without CAP_NET_ADMIN");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }
}
