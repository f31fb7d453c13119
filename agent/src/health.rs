//! A small HTTP server for probes and scraping: `/healthz` (the process serves), `/readyz` (the role's
//! own readiness, given as a closure), `/metrics` (a prometheus-client registry, OpenMetrics text) and,
//! where the role has one, `/status` (its view of itself as JSON, for `kubelink status --seed`).
//! Shared by the roles: each passes its readiness check and registry.
//!
//! The agent's server listens on the node's network (hostNetwork) without authentication, so it
//! bounds what a client can hold ([`Limits`]): a request head must arrive within a few seconds, a
//! connection lives at most so long, and only so many are served at once; a client past the limit
//! waits in the kernel's accept queue, costing the process nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The role's readiness: `Ok` when ready, else why not (shown in the `/readyz` body).
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The role's view of itself, as JSON.
pub type StatusView = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
pub struct Health {
    pub ready: Readiness,
    pub registry: Arc<Mutex<Registry>>,
    /// `None`: no `/status` (404).
    pub status: Option<StatusView>,
}

#[derive(Debug, thiserror::Error)]
#[error("health server on {addr}: {source} (pick a free address with --health-listen)")]
pub struct HealthError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// A `--health-listen` address: `ip:port`, `[ipv6]:port`, or an IPv4 address in brackets, `[ip]:port`,
/// which is what a Pod spec's `[$(KUBELINK_NODE_IP)]:port` gives for either family of host IP.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bracketed = text.strip_prefix('[').and_then(|rest| rest.split_once("]:"));
    match bracketed.map(|(ip, port)| (ip.parse::<std::net::IpAddr>(), port.parse::<u16>())) {
        Some((Ok(ip), Ok(port))) => Ok(SocketAddr::new(ip, port)),
        _ => Err(format!("{text:?} is not an address with a port (ip:port, [ip]:port)")),
    }
}

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait to be accepted. Each costs at most `max_head` of buffer,
    /// so many can be held cheaply: a flood of slow clients does not keep a probe waiting behind it.
    pub connections: usize,
    /// The first byte, and then the whole request head (request line and headers), must arrive
    /// within this each: a client that sends nothing is closed as one that never finishes.
    pub header_read: Duration,
    /// A connection is closed after this, whatever it does (probes and scrapes take milliseconds).
    pub lifetime: Duration,
    /// The read buffer of a connection, and so the largest request head (a larger one is refused).
    pub max_head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 1024,
            header_read: Duration::from_secs(5),
            lifetime: Duration::from_secs(30),
            max_head: 16 * 1024,
        }
    }
}

impl Health {
    /// Binds `addr` now (a busy port is an error at start, not a silent gap) and serves in the
    /// background with the default [`Limits`]. Returns the bound address (useful with port 0).
    pub async fn serve(self, addr: SocketAddr) -> Result<SocketAddr, HealthError> {
        self.serve_with(addr, Limits::default()).await
    }

    /// [`Self::serve`] with `limits`.
    pub async fn serve_with(self, addr: SocketAddr, limits: Limits) -> Result<SocketAddr, HealthError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| HealthError { addr, source })?;
        let bound = listener.local_addr().map_err(|source| HealthError { addr, source })?;
        let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections));
        tokio::spawn(async move {
            loop {
                // A permit first: past the limit, clients wait in the accept queue, not in memory.
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                match listener.accept().await {
                    Ok((stream, _)) => self.connection(stream, limits, permit),
                    Err(e) => tracing::warn!("health server: accept: {e}"),
                }
            }
        });
        Ok(bound)
    }

    fn connection(&self, stream: tokio::net::TcpStream, limits: Limits, permit: tokio::sync::OwnedSemaphorePermit) {
        let health = self.clone();
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte: a client that sends nothing is closed here.
            let first = tokio::time::timeout(limits.header_read, stream.peek(&mut [0u8; 1])).await;
            if !matches!(first, Ok(Ok(n)) if n > 0) {
                drop(permit);
                return;
            }
            let service = service_fn(move |req: Request<Incoming>| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(health.respond(req.uri().path())) }
            });
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(limits.header_read).max_buf_size(limits.max_head);
            let served = http.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.lifetime, served).await {
                Ok(Err(e)) => tracing::debug!("health server: connection: {e}"),
                Err(_) => tracing::debug!("health server: connection closed after {:?}", limits.lifetime),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }

    fn respond(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match (self.ready)() {
                Ok(()) => text(StatusCode::OK, "ready\n".into()),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
            },
            "/metrics" => self.metrics(),
            "/status" if self.status.is_some() => self.status(),
            _ => text(StatusCode::NOT_FOUND, "not found; try /healthz, /readyz or /metrics\n".into()),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let mut body = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}\n"));
        }
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    }
}

impl Health {
    fn status(&self) -> Response<Full<Bytes>> {
        let Some(view) = &self.status else { return text(StatusCode::NOT_FOUND, "no status here\n".into()) };
        let mut response = text(StatusCode::OK, view().to_string());
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        response
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};

    use prometheus_client::metrics::counter::Counter;

    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn serves_health_readiness_and_metrics() {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("kubelink_test_events", "events seen", counter.clone());
        counter.inc_by(3);
        let health = Health {
            ready: Arc::new(move || if f.load(Ordering::Relaxed) { Ok(()) } else { Err("no gateway".into()) }),
            registry: Arc::new(Mutex::new(registry)),
            status: Some(Arc::new(|| serde_json::json!({"role": "router"}))),
        };
        let addr = health.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (healthz, not_ready, metrics, missing, status) = tokio::task::spawn_blocking(move || {
            (
                get(addr, "/healthz"),
                get(addr, "/readyz"),
                get(addr, "/metrics"),
                get(addr, "/nope"),
                get(addr, "/status"),
            )
        })
        .await
        .unwrap();
        assert!(status.starts_with("HTTP/1.1 200") && status.ends_with(r#"{"role":"router"}"#), "{status}");
        assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
        assert!(not_ready.starts_with("HTTP/1.1 503") && not_ready.contains("not ready: no gateway"), "{not_ready}");
        assert!(metrics.contains("kubelink_test_events_total 3"), "{metrics}");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        flag.store(true, Ordering::Relaxed);
        let ready = tokio::task::spawn_blocking(move || get(addr, "/readyz")).await.unwrap();
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    }

    /// Unfinished request heads are cut off after the header timeout, at most `connections` are held
    /// at once, and a probe gets through once they are gone. (Without the limits, 300 such heads kept
    /// a process at 140 MB, all open after 37 s.)
    #[tokio::test(flavor = "multi_thread")]
    async fn unfinished_request_heads_are_cut_off_and_probes_get_through() {
        let health =
            Health { ready: Arc::new(|| Ok(())), registry: Arc::new(Mutex::new(Registry::default())), status: None };
        let limits = Limits { connections: 4, header_read: Duration::from_millis(300), ..Limits::default() };
        let addr = health.serve_with("127.0.0.1:0".parse().unwrap(), limits).await.unwrap();
        let (closed, took, probe) = tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            // Half send an unfinished head, half nothing at all.
            let mut slow: Vec<std::net::TcpStream> = (0..12)
                .map(|i| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    if i % 2 == 0 {
                        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
                    }
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s
                })
                .collect();
            // Each is closed by the server (EOF or reset), in rounds of `connections` at a time.
            // A read that times out (the client's 10 s) means the server still holds the connection.
            let closed_by_server = |s: &mut std::net::TcpStream| match s.read(&mut [0u8; 256]) {
                Ok(0) => true,
                Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                Ok(_) => false,
            };
            let closed = slow.iter_mut().map(closed_by_server).filter(|c| *c).count();
            (closed, start.elapsed(), get(addr, "/healthz"))
        })
        .await
        .unwrap();
        assert_eq!(closed, 12, "every unfinished head is closed");
        // 12 heads, 4 at a time, 300 ms each: three rounds, never all twelve at once.
        assert!(took >= Duration::from_millis(850), "served more than 4 at once: all closed after {took:?}");
        assert!(took < Duration::from_secs(5), "the heads were held for {took:?}");
        assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    }

    #[test]
    fn a_listen_address_may_bracket_either_family() {
        assert_eq!(parse_listen("0.0.0.0:8093"), Ok(SocketAddr::from(([0, 0, 0, 0], 8093))));
        assert_eq!(parse_listen("[10.250.0.7]:8093"), Ok(SocketAddr::from(([10, 250, 0, 7], 8093))));
        assert_eq!(parse_listen("[fd00::7]:8093"), Ok("[fd00::7]:8093".parse().unwrap()));
        for bad in ["10.250.0.7", "[10.250.0.7]", "[]:8093", "[node]:8093", "[10.250.0.7]:x", "$(KUBELINK_NODE_IP):1"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_busy_port_is_an_error_that_says_what_to_do() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let health =
            Health { ready: Arc::new(|| Ok(())), registry: Arc::new(Mutex::new(Registry::default())), status: None };
        let err = health.serve(taken.local_addr().unwrap()).await.unwrap_err().to_string();
        assert!(err.contains("--health-listen"), "{err}");
    }
}
