//! BGP's TCP sockets: the listeners on the BGP port and the connections we open, with
//! TCP-MD5 signatures (RFC 2385) keyed per peer address, a bound local address and an
//! eBGP multihop TTL where the peering asks for them.
#![allow(unsafe_code)] // TCP_MD5SIG: a setsockopt with a C struct; see each SAFETY.

use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The longest key Linux takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY: usize = 80;

/// `struct tcp_md5sig` of `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY],
}

/// Sets (or, with an empty key, removes) the TCP-MD5 key for segments to and from
/// `peer` on `fd`: a listener (for connections it will accept from `peer`) or a
/// socket about to connect to `peer`.
pub fn set_md5(fd: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP-MD5 password for {peer} is {} bytes; Linux takes at most {MD5_MAX_KEY}",
                key.len()
            ),
        ));
    }
    let addr = SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: sockaddr_storage and the struct are plain data, valid when zeroed.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    // SAFETY: `addr.len()` bytes are readable at `as_ptr()` and fit in a
    // sockaddr_storage, which is the largest socket address.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr().cast::<u8>(),
            (&mut sig.addr as *mut libc::sockaddr_storage).cast::<u8>(),
            addr.len() as usize,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: the fd is an open socket owned by the caller; the option value is a
    // properly sized tcp_md5sig that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setting the TCP-MD5 key for {peer}: {e}"),
        ));
    }
    Ok(())
}

fn domain(ip: IpAddr) -> Domain {
    if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// A listener on `addr` (IPv6 listeners take IPv6 only: IPv4 has its own).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(domain(addr.ip()), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("binding the BGP port {addr}: {e}")))?;
    s.listen(128)?;
    TcpListener::from_std(std::net::TcpListener::from(s))
}

/// How to reach a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub password: Option<Vec<u8>>,
    /// IP TTL (hop limit) of our segments; `None`: the system's default.
    pub ttl: Option<u8>,
}

/// Opens a connection as `dial` says, giving up after `timeout`.
pub async fn connect(dial: &Dial, timeout: Duration) -> io::Result<TcpStream> {
    let ip = dial.remote.ip();
    let s = Socket::new(domain(ip), Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    if let Some(key) = &dial.password {
        set_md5(&s, ip, key)?;
    }
    if let Some(ttl) = dial.ttl {
        if ip.is_ipv4() {
            s.set_ttl_v4(u32::from(ttl))?;
        } else {
            s.set_unicast_hops_v6(u32::from(ttl))?;
        }
    }
    if let Some(local) = dial.local_ip {
        s.bind(&SocketAddr::new(local, 0).into())
            .map_err(|e| io::Error::new(e.kind(), format!("binding local address {local}: {e}")))?;
    }
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(s));
    match tokio::time::timeout(timeout, socket.connect(dial.remote)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {} timed out", dial.remote),
        )),
    }
}

/// Sets the IP TTL (hop limit) of an accepted connection's segments.
pub fn set_ttl(stream: &tokio::net::TcpStream, ttl: u8) -> io::Result<()> {
    let s = socket2::SockRef::from(stream);
    match stream.local_addr()?.ip() {
        IpAddr::V4(_) => s.set_ttl_v4(u32::from(ttl)),
        IpAddr::V6(_) => s.set_unicast_hops_v6(u32::from(ttl)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn md5_keys_are_taken_and_too_long_ones_refused() {
        let l = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let peer: IpAddr = "127.0.0.2".parse().unwrap();
        set_md5(&l, peer, b"secret").unwrap();
        set_md5(&l, peer, b"").unwrap();
        let e = set_md5(&l, peer, &[b'x'; 81]).unwrap_err();
        assert!(e.to_string().contains("at most 80"), "{e}");
    }
}
