//! `xroute status`: the per-core counters of the local agent, from its `/stats`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Address of the agent's stats endpoint.
    #[arg(long, default_value = "127.0.0.1")]
    pub metrics_addr: IpAddr,
    #[arg(long, default_value_t = crate::DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// A plain HTTP GET of `path`, returning the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let (status, line, body) = http_exchange(addr, path)?;
    if status != 200 {
        return Err(format!("{addr}{path}: {line}"));
    }
    Ok(body)
}

/// A plain HTTP GET of `path`: the status code, the status line and the body.
pub fn http_exchange(addr: SocketAddr, path: &str) -> Result<(u16, String, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("nothing answers on {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    s.read_to_string(&mut response)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr} sent no HTTP response"))?;
    let line = head.lines().next().unwrap_or("").to_string();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: no status in `{line}`"))?;
    Ok((status, line, body.to_string()))
}

pub fn status(a: StatusArgs) -> Result<(), String> {
    let body = http_get(SocketAddr::new(a.metrics_addr, a.metrics_port), "/stats")?;
    if a.json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("bad /stats: {e}"))?;
    print!("{}", render(&v));
    Ok(())
}

/// The counters as a table, one row per worker, then non-zero drops and kernel counts.
pub fn render(v: &serde_json::Value) -> String {
    let mut out = String::new();
    let n = |w: &serde_json::Value, k: &str| w[k].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "node {}  snapshot generation {}\n",
        v["node"].as_str().unwrap_or("?"),
        v["generation"]
    ));
    out.push_str(&format!(
        "{:>6} {:>4} {:>4} {:>12} {:>12} {:>8} {:>8} {:>8} {:>10}\n",
        "worker",
        "core",
        "gen",
        "rx_packets",
        "tx_packets",
        "punts",
        "replies",
        "icmp_err",
        "drops"
    ));
    for w in v["workers"].as_array().into_iter().flatten() {
        let drops: u64 = w["drops"]
            .as_object()
            .map_or(0, |d| d.values().filter_map(|x| x.as_u64()).sum());
        out.push_str(&format!(
            "{:>6} {:>4} {:>4} {:>12} {:>12} {:>8} {:>8} {:>8} {:>10}\n",
            n(w, "worker"),
            w["core"],
            n(w, "generation"),
            n(w, "rx_packets"),
            n(w, "tx_packets"),
            n(w, "punts"),
            n(w, "replies"),
            n(w, "icmp_errors"),
            drops
        ));
        for (reason, count) in w["drops"].as_object().into_iter().flatten() {
            if count.as_u64().unwrap_or(0) > 0 {
                out.push_str(&format!("         drop {reason}: {count}\n"));
            }
        }
        for s in w["sockets"].as_array().into_iter().flatten() {
            let fields = [
                "rx_dropped",
                "rx_ring_full",
                "rx_fill_ring_empty_descs",
                "tx_invalid_descs",
            ];
            let nonzero: Vec<String> = fields
                .iter()
                .filter(|f| n(s, f) > 0)
                .map(|f| format!("{f}={}", n(s, f)))
                .collect();
            if !nonzero.is_empty() {
                out.push_str(&format!(
                    "         kernel {}: {}\n",
                    s["port"].as_str().unwrap_or("?"),
                    nonzero.join(" ")
                ));
            }
        }
    }
    for p in v["ports"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "port {:<12} xdp={:<7} to_fastpath={} to_kernel={}\n",
            p["port"].as_str().unwrap_or("?"),
            if p["native_xdp"].as_bool().unwrap_or(false) {
                "native"
            } else {
                "generic"
            },
            p["steered_to_fastpath"],
            p["passed_to_kernel"]
        ));
    }
    out
}
