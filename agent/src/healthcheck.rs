//! The `healthCheckNodePort` answers kube-proxy gives load balancers (cloud ones,
//! MetalLB): for a service with `externalTrafficPolicy: Local`, HTTP on that port of
//! every node address says how many of the service's endpoints are ready on this
//! node: 200 with at least one, 503 with none, so that the load balancer sends the
//! service's traffic only to nodes that have a backend for it. The body and headers
//! are kube-proxy's:
//!
//! ```text
//! HTTP/1.1 200 OK
//! Content-Type: application/json
//! X-Content-Type-Options: nosniff
//! X-Load-Balancing-Endpoint-Weight: 1
//!
//! {"service":{"namespace":"default","name":"web"},"localEndpoints":1,"serviceProxyHealthy":true}
//! ```
//!
//! The ports follow the published snapshot: a listener is opened for each port a
//! snapshot's services name and closed when none does; each answer reads the newest
//! snapshot, so an endpoint change is answered as soon as the fastpath runs it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fastpath::snapshot::SnapshotCell;
use nat::frontend::HealthCheck;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How often the listeners are matched to the snapshot's services.
const RECONCILE: Duration = Duration::from_secs(1);

/// The answer on health check port `port` as the snapshot in `cell` has it.
pub fn answer(cell: &SnapshotCell, port: u16) -> Response {
    reply(cell.load().services.frontends.health_check(port))
}

/// The answer for health check `h` (none: a port no service has any more).
fn reply(h: Option<&HealthCheck>) -> Response {
    let (namespace, name, count) = match h {
        Some(h) => (h.namespace.clone(), h.name.clone(), h.local_endpoints),
        None => (String::new(), String::new(), 0),
    };
    let body = serde_json::json!({
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": count,
        "serviceProxyHealthy": true,
    })
    .to_string();
    let status = if count > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-load-balancing-endpoint-weight", HeaderValue::from(count));
    r
}

/// Binds port `port` on every address: IPv6 and IPv4 on one socket where the node has
/// IPv6, IPv4 alone where it does not.
async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match tokio::net::TcpListener::bind(any6).await {
        Ok(l) => Ok(l),
        Err(_) => {
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await
        }
    }
}

/// Keeps a listener on every health check port of the published snapshot, until the
/// task is dropped.
pub async fn run(cell: Arc<SnapshotCell>) {
    let mut running: HashMap<u16, tokio::task::JoinHandle<()>> = HashMap::new();
    // Ports that could not be bound, reported once each.
    let mut failed: HashSet<u16> = HashSet::new();
    loop {
        let want: BTreeSet<u16> = cell
            .load()
            .services
            .frontends
            .health_checks
            .iter()
            .map(|h| h.port)
            .collect();
        running.retain(|port, task| {
            let keep = want.contains(port) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(port, "health check port closed");
            }
            keep
        });
        failed.retain(|p| want.contains(p));
        let missing: Vec<u16> = want
            .iter()
            .copied()
            .filter(|p| !running.contains_key(p))
            .collect();
        for port in missing {
            match bind(port).await {
                Ok(listener) => {
                    tracing::info!(port, "health check port listening");
                    failed.remove(&port);
                    let cell = Arc::clone(&cell);
                    let app = axum::Router::new()
                        .fallback(move || std::future::ready(answer(&cell, port)));
                    running.insert(
                        port,
                        tokio::spawn(async move {
                            if let Err(e) = axum::serve(listener, app).await {
                                tracing::error!(port, error = %e, "health check port stopped");
                            }
                        }),
                    );
                }
                Err(e) => {
                    if failed.insert(port) {
                        tracing::error!(
                            port,
                            error = %e,
                            "healthCheckNodePort cannot be bound (another process holds it?); retrying"
                        );
                    }
                }
            }
        }
        tokio::time::sleep(RECONCILE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(r: Response) -> (u16, HashMap<String, String>, serde_json::Value) {
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn answers_as_kube_proxy_does() {
        let h = HealthCheck {
            port: 32000,
            namespace: "shop".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let (status, headers, body) = parts(reply(Some(&h))).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-load-balancing-endpoint-weight"], "2");
        assert_eq!(
            body,
            serde_json::json!({
                "service": {"namespace": "shop", "name": "web"},
                "localEndpoints": 2,
                "serviceProxyHealthy": true
            })
        );
        let none = HealthCheck {
            local_endpoints: 0,
            ..h
        };
        let (status, headers, body) = parts(reply(Some(&none))).await;
        assert_eq!(
            status, 503,
            "no local endpoint: the load balancer drains the node"
        );
        assert_eq!(headers["x-load-balancing-endpoint-weight"], "0");
        assert_eq!(body["localEndpoints"], 0);
        let (status, _, _) = parts(reply(None)).await;
        assert_eq!(status, 503);
    }
}
