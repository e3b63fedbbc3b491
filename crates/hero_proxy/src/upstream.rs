//! Upstreams over TCP or unix sockets, with pooled keep-alive HTTP/1.1 connections (hyper-util's client).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;

use crate::error::{ProxyError, Result};

/// Body type of every response the proxy produces.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Connects every request to one unix socket, whatever the URI says.
#[derive(Clone, Debug)]
pub struct UnixConnector(Arc<PathBuf>);

impl tower::Service<Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path.as_path()).await?)) })
    }
}

/// Where a route sends its requests. Holds no connection pool itself: pools are per thread (see [`CLIENTS`]), so
/// with one single-threaded runtime per core a request, its pooled upstream connection and the tasks driving both
/// stay on one thread (no cross-thread wake-ups on the hot path, like nginx's worker model).
#[derive(Clone, Debug)]
pub enum Upstream {
    /// `http://host:port`.
    Tcp {
        /// `host:port`.
        authority: String,
    },
    /// `unix:/path`.
    Unix {
        /// Socket path.
        path: Arc<PathBuf>,
    },
}

/// Per-thread pooled clients: one for all TCP upstreams (pooled by authority), one per unix socket path.
struct Clients {
    tcp: Client<HttpConnector, Incoming>,
    unix: HashMap<PathBuf, Client<UnixConnector, Incoming>>,
}

thread_local! {
    static CLIENTS: RefCell<Option<Clients>> = const { RefCell::new(None) };
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(512);
    b
}

fn with_clients<R>(f: impl FnOnce(&mut Clients) -> R) -> R {
    CLIENTS.with(|c| {
        let mut c = c.borrow_mut();
        let clients = c.get_or_insert_with(|| {
            let mut conn = HttpConnector::new();
            conn.set_nodelay(true);
            conn.set_keepalive(Some(Duration::from_secs(60)));
            Clients {
                tcp: builder().build(conn),
                unix: HashMap::new(),
            }
        });
        f(clients)
    })
}

impl Upstream {
    /// Parses `http://host:port` or `unix:/abs/path.sock`.
    pub fn parse(s: &str) -> Result<Upstream> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(ProxyError::Config(format!(
                    "upstream {s:?}: unix socket path must be absolute"
                )));
            }
            return Ok(Upstream::Unix {
                path: Arc::new(PathBuf::from(path)),
            });
        }
        let authority = s
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| {
                ProxyError::Config(format!(
                    "upstream {s:?}: expected http://host:port or unix:/path"
                ))
            })?;
        Ok(Upstream::Tcp {
            authority: authority.to_owned(),
        })
    }

    /// For logs and the RPC route listing.
    pub fn describe(&self) -> String {
        match self {
            Upstream::Tcp { authority } => format!("http://{authority}"),
            Upstream::Unix { path } => format!("unix:{}", path.display()),
        }
    }

    /// Sends `req` (its URI's path and query are kept) to this upstream, waiting at most `timeout` for the
    /// response head (connect included): a backend that accepts and never answers must not hold the client forever.
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
        timeout: Duration,
    ) -> Result<Response<Incoming>> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let authority = match self {
            Upstream::Tcp { authority } => authority.as_str(),
            Upstream::Unix { .. } => "localhost",
        };
        *req.uri_mut() = http::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(pq)
            .build()
            .map_err(|_| ProxyError::Invalid("request target".into()))?;
        let res = match self {
            Upstream::Tcp { .. } => {
                let client = with_clients(|c| c.tcp.clone());
                tokio::time::timeout(timeout, client.request(req)).await
            }
            Upstream::Unix { path } => {
                let client = with_clients(|c| {
                    c.unix
                        .entry(path.as_ref().clone())
                        .or_insert_with(|| builder().build(UnixConnector(path.clone())))
                        .clone()
                });
                tokio::time::timeout(timeout, client.request(req)).await
            }
        };
        match res {
            Err(_) => Err(ProxyError::UpstreamTimeout(self.describe())),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if is_client_body_error(&e) => Err(ProxyError::ClientBody),
            Ok(Err(e)) => Err(ProxyError::Upstream(format!("{}: {e}", self.describe()))),
        }
    }
}

/// The client's own body failed while it was being streamed to the upstream: hyper's client reports that as a
/// "user body" error (the body stream we handed it errored), not as anything the upstream did.
fn is_client_body_error(e: &hyper_util::client::legacy::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                return true;
            }
        }
        cur = err.source();
    }
    false
}
