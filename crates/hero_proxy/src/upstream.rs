//! Upstreams over TCP or unix sockets, with pooled keep-alive HTTP/1.1 connections (hyper-util's client).

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

/// Where a route sends its requests.
#[derive(Clone)]
pub enum Upstream {
    /// `http://host:port`.
    Tcp {
        /// `host:port`.
        authority: String,
        /// Pooled client.
        client: Client<HttpConnector, Incoming>,
    },
    /// `unix:/path`.
    Unix {
        /// Socket path.
        path: Arc<PathBuf>,
        /// Pooled client.
        client: Client<UnixConnector, Incoming>,
    },
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(512);
    b
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
            let path = Arc::new(PathBuf::from(path));
            return Ok(Upstream::Unix {
                client: builder().build(UnixConnector(path.clone())),
                path,
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
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        Ok(Upstream::Tcp {
            authority: authority.to_owned(),
            client: builder().build(conn),
        })
    }

    /// For logs and the RPC route listing.
    pub fn describe(&self) -> String {
        match self {
            Upstream::Tcp { authority, .. } => format!("http://{authority}"),
            Upstream::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }

    /// Sends `req` (its URI's path and query are kept) to this upstream.
    pub async fn send(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned();
        let authority = match self {
            Upstream::Tcp { authority, .. } => authority.as_str(),
            Upstream::Unix { .. } => "localhost",
        };
        *req.uri_mut() = format!("http://{authority}{pq}")
            .parse()
            .map_err(|_| ProxyError::Invalid("request target".into()))?;
        let res = match self {
            Upstream::Tcp { client, .. } => client.request(req).await,
            Upstream::Unix { client, .. } => client.request(req).await,
        };
        res.map_err(|e| ProxyError::Provider(format!("upstream {}: {e}", self.describe())))
    }
}
