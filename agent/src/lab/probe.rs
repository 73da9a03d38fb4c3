//! Traffic helpers the lab runs inside its namespaces (`ip netns exec NS xroute probe ...`).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    #[command(subcommand)]
    pub kind: Probe,
}

#[derive(Debug, clap::Subcommand)]
pub enum Probe {
    /// Echo UDP datagrams back to their sender until `count` were echoed or `timeout`
    /// passed; then print the sender's address (`peer ADDR`).
    UdpEcho {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 20)]
        count: u32,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Send `count` numbered datagrams and check that each comes back unchanged.
    UdpClient {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 20)]
        count: u32,
        /// Every fourth datagram this many bytes long (0: none), so that the sender
        /// fragments it (and the echo server its answer) on a 1500-byte path.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=65000))]
        big: u32,
    },
    /// Send one datagram from each of `flows` sockets (each its own source port: as many
    /// flows to an ECMP hash), expecting no answer.
    UdpFlows {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 64)]
        flows: u32,
        /// IP TTL (IPv6 hop limit) of the datagrams.
        #[arg(long, default_value_t = 64)]
        ttl: u32,
    },
    /// Accept one TCP connection, read it to the end, check every byte of the pattern
    /// `tcp-source` sends, and print how many arrived.
    TcpSink {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Send `bytes` bytes of a known pattern over TCP and close; spread over `seconds`
    /// when given (a flow that lasts), from source port `sport` when given.
    TcpSource {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 0)]
        seconds: u64,
        #[arg(long)]
        sport: Option<u16>,
    },
    /// Accept TCP connections until `timeout`, each checked as `tcp-sink` checks it;
    /// print `PEER_PORT BYTES` as each ends (`PEER_PORT error ...` if it broke).
    TcpSinks {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// A thread that panics while the main thread waits `wait` seconds and returns:
    /// shows that a panic anywhere ends the process with an error (the agent's
    /// policy), where a thread's panic would otherwise go unnoticed.
    ThreadPanic {
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Answer every TCP connection with `name` and a newline, then close it; until
    /// killed or `timeout` seconds pass.
    TcpIdent {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Open `count` short TCP connections one after another, read each one's answer
    /// (a `tcp-ident` name) and print how many each name gave: `spread NAME=N ...`.
    TcpConnects {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: u32,
    },
    /// Answer every UDP datagram with `name`, until killed or `timeout` seconds pass.
    UdpIdent {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// One UDP flow that lasts: from source port `sport`, a datagram every
    /// `interval_ms` for `seconds`, each answered by a `udp-ident` name; prints the
    /// answers in order as runs of one name, and the datagrams left unanswered:
    /// `runs NAME=N NAME=N lost=K`.
    UdpStream {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        sport: u16,
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
    },
    /// One UDP datagram from a connected socket, expecting it refused (an ICMP port
    /// unreachable back): prints `refused`; an answer or silence is an error.
    UdpRefused {
        #[arg(long)]
        to: SocketAddr,
    },
    /// One HTTP/1.1 GET of `path`; prints the status code and the body on one line.
    HttpGet {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
    },
}

/// The byte at offset `i` of the TCP pattern.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

pub fn probe(a: ProbeArgs) -> Result<(), String> {
    match a.kind {
        Probe::UdpEcho {
            bind,
            count,
            timeout,
        } => udp_echo(bind, count, Duration::from_secs(timeout)),
        Probe::UdpClient { to, count, big } => udp_client(to, count, big as usize),
        Probe::UdpFlows { to, flows, ttl } => udp_flows(to, flows, ttl),
        Probe::TcpSink { bind, timeout } => tcp_sink(bind, Duration::from_secs(timeout)),
        Probe::TcpSource {
            to,
            bytes,
            seconds,
            sport,
        } => tcp_source(to, bytes, seconds, sport),
        Probe::TcpSinks { bind, timeout } => tcp_sinks(bind, Duration::from_secs(timeout)),
        Probe::HttpGet { to, path } => http_get(to, &path),
        Probe::TcpIdent {
            bind,
            name,
            timeout,
        } => tcp_ident(bind, &name, Duration::from_secs(timeout)),
        Probe::TcpConnects { to, count } => tcp_connects(to, count),
        Probe::UdpRefused { to } => udp_refused(to),
        Probe::UdpIdent {
            bind,
            name,
            timeout,
        } => udp_ident(bind, &name, Duration::from_secs(timeout)),
        Probe::UdpStream {
            to,
            sport,
            seconds,
            interval_ms,
        } => udp_stream(
            to,
            sport,
            Duration::from_secs(seconds),
            Duration::from_millis(interval_ms.max(1)),
        ),
        Probe::ThreadPanic { wait } => {
            std::thread::Builder::new()
                .name("xroute-probe".into())
                .spawn(|| panic!("the probe's deliberate panic"))
                .map_err(|e| format!("starting the thread: {e}"))?;
            std::thread::sleep(Duration::from_secs(wait));
            Ok(())
        }
    }
}

fn tcp_ident(bind: SocketAddr, name: &str, timeout: Duration) -> Result<(), String> {
    use std::io::Write;
    let l = std::net::TcpListener::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match l.accept() {
            Ok((mut c, _)) => {
                let _ = c.set_nonblocking(false);
                let _ = writeln!(c, "{name}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accepting on {bind}: {e}")),
        }
    }
    Ok(())
}

fn tcp_connects(to: SocketAddr, count: u32) -> Result<(), String> {
    use std::io::Read;
    let mut spread: std::collections::BTreeMap<String, u32> = Default::default();
    for i in 0..count {
        let mut c = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .map_err(|e| format!("connection {i} of {count} to {to}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut name = String::new();
        c.read_to_string(&mut name)
            .map_err(|e| format!("connection {i} of {count} to {to}: reading: {e}"))?;
        *spread.entry(name.trim().to_string()).or_default() += 1;
    }
    let v: Vec<String> = spread.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!("spread {}", v.join(" "));
    Ok(())
}

fn udp_refused(to: SocketAddr) -> Result<(), String> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| "address")?;
    let s = UdpSocket::bind(any).map_err(|e| e.to_string())?;
    s.connect(to).map_err(|e| format!("{to}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    // Twice: the first may wait for a neighbour on the way.
    for _ in 0..2 {
        let _ = s.send(b"anyone?");
        match s.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                println!("refused");
                return Ok(());
            }
            Ok(n) => return Err(format!("{to} answered {n} bytes")),
            Err(_) => continue,
        }
    }
    Err(format!("{to}: no answer and no port unreachable in 4 s"))
}

fn udp_ident(bind: SocketAddr, name: &str, timeout: Duration) -> Result<(), String> {
    let s = UdpSocket::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        if let Ok((_, from)) = s.recv_from(&mut buf) {
            s.send_to(name.as_bytes(), from)
                .map_err(|e| format!("answering {from}: {e}"))?;
        }
    }
}

fn udp_stream(
    to: SocketAddr,
    sport: u16,
    length: Duration,
    interval: Duration,
) -> Result<(), String> {
    let any: std::net::IpAddr = if to.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let s = UdpSocket::bind(SocketAddr::new(any, sport))
        .map_err(|e| format!("binding source port {sport}: {e}"))?;
    // Connected: only the service's answers (reverse NATed to `to`) are read.
    s.connect(to).map_err(|e| format!("{to}: {e}"))?;
    let mut runs: Vec<(String, u32)> = Vec::new();
    let mut lost = 0u32;
    let mut buf = [0u8; 2048];
    let end = Instant::now() + length;
    let mut seq = 0u32;
    while Instant::now() < end {
        seq += 1;
        let next = Instant::now() + interval;
        // A send refused (an ICMP error about an earlier datagram) is a lost one.
        let _ = s.send(&seq.to_be_bytes());
        let answer = loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            match s.recv(&mut buf) {
                Ok(n) => break Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break None,
            }
        };
        match answer {
            Some(name) => match runs.last_mut() {
                Some((last, n)) if *last == name => *n += 1,
                _ => runs.push((name, 1)),
            },
            None => lost += 1,
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let v: Vec<String> = runs.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!("runs {} lost={lost}", v.join(" "));
    Ok(())
}

fn http_get(to: SocketAddr, path: &str) -> Result<(), String> {
    let (status, _, body) = crate::status::http_exchange(to, path)?;
    println!("{status} {}", body.trim());
    Ok(())
}

fn udp_echo(bind: SocketAddr, count: u32, timeout: Duration) -> Result<(), String> {
    let s = UdpSocket::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    println!("ready");
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    let mut echoed = 0;
    let mut peer = None;
    while echoed < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "echoed {echoed} of {count} datagrams before the timeout"
            ));
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            s.send_to(&buf[..n], from).map_err(|e| e.to_string())?;
            echoed += 1;
            peer.get_or_insert(from);
        }
    }
    // Who the datagrams came from, as this end saw it (a NAT on the way shows here).
    if let Some(p) = peer {
        println!("peer {}", p.ip());
    }
    Ok(())
}

fn udp_flows(to: SocketAddr, flows: u32, ttl: u32) -> Result<(), String> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| "address")?;
    // All sockets open at once: no two flows can share a source port.
    let mut sockets = Vec::new();
    for i in 0..flows {
        let s = UdpSocket::bind(any).map_err(|e| format!("socket {i}: {e}"))?;
        if to.is_ipv4() {
            s.set_ttl(ttl).map_err(|e| format!("TTL {ttl}: {e}"))?;
        } else {
            socket2::SockRef::from(&s)
                .set_unicast_hops_v6(ttl)
                .map_err(|e| format!("hop limit {ttl}: {e}"))?;
        }
        s.send_to(format!("xroute flow {i}").as_bytes(), to)
            .map_err(|e| format!("sending to {to}: {e}"))?;
        sockets.push(s);
    }
    println!("udp flows {flows}");
    Ok(())
}

fn udp_client(to: SocketAddr, count: u32, big: usize) -> Result<(), String> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| "address")?;
    let s = UdpSocket::bind(any).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut ok = 0;
    let mut buf = vec![0u8; 65536];
    let (mut big_ok, mut big_sent, mut retries) = (0, 0, 0);
    for i in 0..count {
        let mut msg = format!("xroute probe {i} {}", "x".repeat(64 + i as usize));
        let is_big = big > msg.len() && i % 4 == 3;
        if is_big {
            // Varied bytes, so that fragments put together wrongly do not compare equal.
            msg.extend((msg.len()..big).map(|j| char::from(b'a' + (j % 26) as u8)));
            big_sent += 1;
        }
        // Up to three tries per datagram: the first may wait for a neighbour. Retries
        // are counted and printed, so a datagram lost now and then shows.
        for attempt in 0..3 {
            retries += u32::from(attempt > 0);
            s.send_to(msg.as_bytes(), to)
                .map_err(|e| format!("sending to {to}: {e}"))?;
            match s.recv_from(&mut buf) {
                Ok((n, from)) if from == to && &buf[..n] == msg.as_bytes() => {
                    ok += 1;
                    big_ok += u32::from(is_big);
                    break;
                }
                _ => continue,
            }
        }
    }
    if big_sent > 0 {
        println!(
            "udp {ok}/{count} ({big_ok}/{big_sent} of {big} bytes, in fragments), {retries} retried"
        );
    } else {
        println!("udp {ok}/{count}, {retries} retried");
    }
    if ok == count {
        Ok(())
    } else {
        Err(format!("{ok} of {count} datagrams came back from {to}"))
    }
}

fn tcp_sink(bind: SocketAddr, timeout: Duration) -> Result<(), String> {
    let l = std::net::TcpListener::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let conn = loop {
        match l.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(format!("no connection on {bind}: {e}")),
        }
    };
    let total = sink_one(conn, timeout)?;
    println!("{total}");
    Ok(())
}

fn tcp_sinks(bind: SocketAddr, timeout: Duration) -> Result<(), String> {
    let l = std::net::TcpListener::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match l.accept() {
            Ok((c, peer)) => {
                std::thread::spawn(move || {
                    use std::io::Write;
                    let line = match sink_one(c, timeout) {
                        Ok(n) => format!("{} {n}", peer.port()),
                        Err(e) => format!("{} error {e}", peer.port()),
                    };
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(format!("accepting on {bind}: {e}")),
        }
    }
    Ok(())
}

/// Reads connection `conn` to its end, checking every byte of the pattern; how many
/// arrived.
fn sink_one(mut conn: std::net::TcpStream, timeout: Duration) -> Result<u64, String> {
    use std::io::Read;
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let mut total = 0u64;
    loop {
        let n = conn
            .read(&mut buf)
            .map_err(|e| format!("after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        if let Some(k) = buf[..n]
            .iter()
            .enumerate()
            .position(|(k, &b)| b != pattern(total + k as u64))
        {
            return Err(format!("byte {} is wrong", total + k as u64));
        }
        total += n as u64;
    }
    Ok(total)
}

/// A TCP connection to `to`, from source port `sport` when given.
fn connect(to: SocketAddr, sport: Option<u16>) -> Result<std::net::TcpStream, String> {
    let Some(sport) = sport else {
        return std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .map_err(|e| format!("connecting to {to}: {e}"));
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let s = if to.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| e.to_string())?;
        let any: std::net::IpAddr = if to.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        s.bind(SocketAddr::new(any, sport))
            .map_err(|e| format!("binding source port {sport}: {e}"))?;
        let c = tokio::time::timeout(Duration::from_secs(5), s.connect(to))
            .await
            .map_err(|_| format!("connecting to {to}: timed out"))?
            .map_err(|e| format!("connecting to {to}: {e}"))?;
        c.into_std().map_err(|e| e.to_string())
    })
    .and_then(|c| {
        c.set_nonblocking(false).map_err(|e| e.to_string())?;
        Ok(c)
    })
}

fn tcp_source(to: SocketAddr, bytes: u64, seconds: u64, sport: Option<u16>) -> Result<(), String> {
    use std::io::Write;
    let mut c = connect(to, sport)?;
    let mut buf = vec![0u8; 65536];
    let chunks = bytes.div_ceil(buf.len() as u64).max(1);
    let pause = Duration::from_secs(seconds) / u32::try_from(chunks).unwrap_or(u32::MAX);
    let mut sent = 0u64;
    while sent < bytes {
        if sent > 0 {
            std::thread::sleep(pause);
        }
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(sent + k as u64);
        }
        c.write_all(&buf[..n])
            .map_err(|e| format!("after {sent} bytes: {e}"))?;
        sent += n as u64;
    }
    c.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    Ok(())
}
