//! The local web gateway: a real HTTP reverse proxy on one loopback port that routes by Host
//! header (`<label>.localhost[:port]`) to a sandbox's web port.
//!
//! It plays the part of the grid's name gateway for the local backend: routes are persisted in a
//! JSON file under the backend root (so they survive a restart of the deployer server) and held in
//! memory for serving. The proxy runs as a task inside the deployer process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};

use crate::compute::BackendError;

/// One route: `<label>.localhost` → `127.0.0.1:<port>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Resource name that owns the route (`hero_u<id>_<name>`).
    pub name: String,
    /// Target `host:port`.
    pub target: String,
}

/// The route table (label → route), persisted as JSON.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RouteTable {
    /// Routes by host label.
    pub routes: BTreeMap<String, Route>,
}

impl RouteTable {
    /// Load from `path`; a missing file is an empty table.
    pub fn load(path: &Path) -> Result<Self, BackendError> {
        match std::fs::read_to_string(path) {
            Ok(s) => serde_json::from_str(&s).map_err(|e| BackendError::Protocol {
                op: "load gateway routes".into(),
                detail: format!("{}: {e}", path.display()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(BackendError::io(path)(e)),
        }
    }

    /// Write atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), BackendError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(BackendError::io(dir))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| BackendError::Protocol {
            op: "save gateway routes".into(),
            detail: e.to_string(),
        })?;
        crate::compute::replace_file(path, text.as_bytes())
    }
}

/// The host label of a `Host` header: `alice.localhost:8088` → `alice`. `None` if it is not
/// `<label>.localhost`.
pub fn host_label(host: &str) -> Option<String> {
    let host = host.trim();
    let without_port = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let lower = without_port.trim_end_matches('.').to_ascii_lowercase();
    let label = lower.strip_suffix(".localhost")?;
    (!label.is_empty() && !label.contains('.')).then(|| label.to_string())
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What a person gets instead of a machine: a plain page that says what is wrong in words they
/// can act on, and nothing about how it is built — no addresses, ports, resource names or error
/// chains (those go to the deployer's log). Every non-forwarded answer of the gateway goes
/// through here, so no branch can leak them. `no-store`: a machine that comes back must not be
/// hidden by a cached error page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainPage {
    /// No machine answers to this name (never made, or decommissioned).
    NoSuchMachine,
    /// The machine exists but is not answering (down, booting, its web server stopped).
    MachineDown,
    /// The request names no machine at all (no or malformed `Host`).
    BadRequest,
}

impl PlainPage {
    /// Status and the page's one-line title and sentence.
    pub fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            PlainPage::NoSuchMachine => (
                StatusCode::NOT_FOUND,
                "No such machine",
                "There is no Hero OS demo machine at this address. If you were given this link, ask the person who sent it whether the machine still exists.",
            ),
            PlainPage::MachineDown => (
                StatusCode::BAD_GATEWAY,
                "This machine is not answering",
                "The Hero OS demo machine at this address exists but is not answering right now. Try again in a few minutes; if it stays like this, tell the person who gave you the link.",
            ),
            PlainPage::BadRequest => (
                StatusCode::BAD_REQUEST,
                "Bad request",
                "This request does not name a machine.",
            ),
        }
    }

    /// The HTML response.
    pub fn response(self) -> Response<ProxyBody> {
        let (status, title, sentence) = self.parts();
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
             <body><h1>{title}</h1><p>{sentence}</p></body></html>\n"
        );
        let mut r = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        );
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        r
    }
}

fn text(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Shared state of the running proxy.
pub(crate) struct GatewayState {
    pub(crate) routes: RwLock<RouteTable>,
    pub(crate) routes_file: PathBuf,
    client: Client<HttpConnector, Incoming>,
    /// Returns true when a `/health` request must be answered 503 (test fault hook).
    pub(crate) health_503: Box<dyn Fn() -> bool + Send + Sync>,
}

impl GatewayState {
    pub(crate) fn new(
        routes_file: PathBuf,
        health_503: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<Self, BackendError> {
        let routes = RouteTable::load(&routes_file)?;
        Ok(Self {
            routes: RwLock::new(routes),
            routes_file,
            client: Client::builder(TokioExecutor::new()).build_http(),
            health_503,
        })
    }

    fn lookup(&self, label: &str) -> Option<Route> {
        self.routes
            .read()
            .ok()
            .and_then(|t| t.routes.get(label).cloned())
    }

    async fn handle(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().host().map(str::to_string));
        let Some(host) = host else {
            return PlainPage::BadRequest.response();
        };
        let Some(label) = host_label(&host) else {
            tracing::debug!(host = %host, "local gateway: host is not <name>.localhost");
            return PlainPage::NoSuchMachine.response();
        };
        let Some(route) = self.lookup(&label) else {
            tracing::debug!(label = %label, "local gateway: no route");
            return PlainPage::NoSuchMachine.response();
        };
        if req.uri().path() == "/health" && (self.health_503)() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "injected fault: health 503",
            );
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let uri = match format!("http://{}{}", route.target, pq).parse::<http::Uri>() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(route = %route.name, error = %e, "local gateway: bad route target");
                return PlainPage::MachineDown.response();
            }
        };
        *req.uri_mut() = uri;
        if let Ok(v) = header::HeaderValue::from_str(&host) {
            req.headers_mut().insert("x-forwarded-host", v);
        }
        req.headers_mut().insert(
            "x-forwarded-proto",
            header::HeaderValue::from_static("http"),
        );
        match tokio::time::timeout(UPSTREAM_HEAD_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(resp)) => resp.map(|b| b.boxed()),
            Ok(Err(e)) => {
                tracing::warn!(route = %route.name, target = %route.target, error = %e, "local gateway: machine not answering");
                PlainPage::MachineDown.response()
            }
            Err(_) => {
                tracing::warn!(route = %route.name, target = %route.target, "local gateway: no answer within the bound");
                PlainPage::MachineDown.response()
            }
        }
    }
}

/// How long a sandbox may take to start answering a request (its response head). Why a bound: a sandbox that
/// accepts and never answers held the gateway connection, and a task, for as long as the client waited.
const UPSTREAM_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a client has to send a request head. hyper enforces its own default only with a timer set; without
/// one, a connection that never sends a head is held for ever.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Aborts the accept loop when dropped.
pub(crate) struct GatewayTask(tokio::task::JoinHandle<()>);

impl Drop for GatewayTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bind `listen` and serve the proxy until the returned task guard is dropped.
pub(crate) async fn serve(
    listen: SocketAddr,
    state: Arc<GatewayState>,
) -> Result<(SocketAddr, GatewayTask), BackendError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| BackendError::Config(format!("local gateway cannot bind {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BackendError::Config(format!("local gateway address: {e}")))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // e.g. EMFILE: back off briefly instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(state.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, GatewayTask(task)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(host_label("alice.localhost:8088").as_deref(), Some("alice"));
        assert_eq!(host_label("Alice.LOCALHOST").as_deref(), Some("alice"));
        assert_eq!(host_label("localhost:8088"), None);
        assert_eq!(host_label("a.b.localhost"), None);
        assert_eq!(host_label("alice.example.com"), None);
    }
}
