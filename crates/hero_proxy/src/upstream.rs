//! Upstreams over TCP or unix sockets, with pooled keep-alive HTTP/1.1 connections (a small per-thread pool of
//! hyper's connection-level client, see [`POOL`]).

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, UPGRADE};
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

use crate::error::{ProxyError, Result};
use crate::lean::{self, BodyError, ExchangeError, Stream};
use crate::pool::{Pool, PoolKey, Pooled};

/// Body type of every response the proxy produces (hyper's client bodies and [`lean`] bodies alike).
pub type ProxyBody = BoxBody<Bytes, BodyError>;

/// Where a route sends its requests. Holds no connection pool itself: pools are per thread (see [`POOL`]), so
/// with one single-threaded runtime per core a request, its pooled upstream connection and the tasks driving both
/// stay on one thread (no cross-thread wake-ups on the hot path, like nginx's worker model).
#[derive(Clone, Debug)]
pub enum Upstream {
    /// `http://host:port`.
    Tcp {
        /// `host:port`.
        authority: Arc<str>,
    },
    /// `unix:/path`.
    Unix {
        /// Socket path.
        path: Arc<PathBuf>,
        /// Pool key (`unix:` and the path).
        key: Arc<str>,
    },
}

/// hyper's sender is usable while its connection is open, and ready once the previous response's body is done.
impl Pooled for SendRequest<Incoming> {
    fn usable(&self) -> bool {
        !self.is_closed()
    }
    fn ready(&self) -> bool {
        self.is_ready()
    }
}

thread_local! {
    /// This thread's idle HTTP/1.1 senders (see [`crate::pool`]). This replaces hyper-util's legacy `Client`, which
    /// cost per request a pool mutex, a checkout future, an absolute-form URI and one extra spawned task to hand the
    /// connection back to the pool; here a request takes a ready sender and puts it back when the response head has
    /// arrived (it is only taken again once hyper says it is ready, i.e. that response's body is done). Each
    /// connection is still driven by its own task (hyper's design), spawned once per connection, not per request.
    static POOL: RefCell<Pool<SendRequest<Incoming>>> = RefCell::new(Pool::default());
}

/// A ready sender for `key` from this thread's pool; closed and long-idle ones are dropped on the way.
fn checkout(key: &PoolKey) -> Option<SendRequest<Incoming>> {
    POOL.with(|p| p.borrow_mut().take(key))
}

/// Drops this thread's closed and long-idle senders (see [`Pool::sweep`]).
pub fn sweep_idle() {
    POOL.with(|p| p.borrow_mut().sweep())
}

/// Puts `sender` back into this thread's pool under `key` (it may still be busy with a response body).
fn checkin(key: &PoolKey, sender: SendRequest<Incoming>) {
    if !sender.is_closed() {
        POOL.with(|p| p.borrow_mut().put(key, sender))
    }
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
                key: s.into(),
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
        // Checked here once, so a config error is reported at load rather than on every request.
        authority
            .parse::<http::uri::Authority>()
            .map_err(|_| ProxyError::Config(format!("upstream {s:?}: invalid host:port")))?;
        Ok(Upstream::Tcp {
            authority: authority.into(),
        })
    }

    /// For logs and the RPC route listing.
    pub fn describe(&self) -> String {
        match self {
            Upstream::Tcp { authority } => format!("http://{authority}"),
            Upstream::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }

    fn key(&self) -> &Arc<str> {
        match self {
            Upstream::Tcp { authority } => authority,
            Upstream::Unix { key, .. } => key,
        }
    }

    /// A new plain connection (TCP with `TCP_NODELAY`, or the unix socket).
    async fn connect_stream(&self) -> std::result::Result<Stream, ProxyError> {
        let fail =
            |e: &dyn std::fmt::Display| ProxyError::Upstream(format!("{}: {e}", self.describe()));
        match self {
            Upstream::Tcp { authority } => {
                // `http://host` without a port means port 80, as in any HTTP client.
                let a: http::uri::Authority = authority.parse().map_err(|e| fail(&e))?;
                let host = a.host().trim_start_matches('[').trim_end_matches(']');
                let s = TcpStream::connect((host, a.port_u16().unwrap_or(80)))
                    .await
                    .map_err(|e| fail(&e))?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            Upstream::Unix { path, .. } => UnixStream::connect(path.as_path())
                .await
                .map(Stream::Unix)
                .map_err(|e| fail(&e)),
        }
    }

    /// A new hyper client connection, handshaken, its driving task spawned on the current runtime (upgrades
    /// allowed: a 101 hands the socket to the WebSocket tunnel).
    async fn connect(&self) -> std::result::Result<SendRequest<Incoming>, ProxyError> {
        let io = self.connect_stream().await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            // The same bound on a response head as the lean exchange's (hyper's default is about 400 KiB).
            .max_header_size(crate::lean::MAX_HEAD)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ProxyError::Upstream(format!("{}: {e}", self.describe())))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req` (its URI's path and query are kept) to this upstream on behalf of `user` (the local user id of
    /// the request's session, `None` without one: connections are only reused for the same user, see [`PoolKey`]),
    /// waiting at most `timeout` for the response head (connect included): a backend that accepts and never answers
    /// must not hold the client forever.
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
        user: Option<i64>,
        timeout: Duration,
    ) -> Result<Response<ProxyBody>> {
        let key = PoolKey {
            upstream: self.key().clone(),
            user,
        };
        // hyper's connection-level client writes the URI as given: send origin-form (path and query) only.
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let pq = req.uri().path_and_query().cloned();
            *req.uri_mut() = pq.map(Uri::from).unwrap_or_else(|| Uri::from_static("/"));
        }
        if !req.headers().contains_key(HOST) {
            let host = match self {
                Upstream::Tcp { authority } => HeaderValue::from_str(authority)
                    .map_err(|_| ProxyError::Invalid("upstream authority".into()))?,
                Upstream::Unix { .. } => HeaderValue::from_static("localhost"),
            };
            req.headers_mut().insert(HOST, host);
        }
        // Bodiless, not an upgrade: the lean exchange in this task (see [`lean`] for why).
        if req.body().is_end_stream() && !req.headers().contains_key(UPGRADE) {
            let (parts, _) = req.into_parts();
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            return match tokio::time::timeout(
                timeout,
                self.send_lean(key, &parts.method, target, &parts.headers),
            )
            .await
            {
                Err(_) => Err(ProxyError::UpstreamTimeout(self.describe())),
                Ok(r) => r.map(|resp| resp.map(|b| b.boxed())),
            };
        }
        match tokio::time::timeout(timeout, self.send_pooled(&key, req)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout(self.describe())),
            Ok(r) => r.map(|resp| resp.map(|b| b.map_err(BodyError::from).boxed())),
        }
    }

    /// One bodiless exchange on a pooled lean connection, or on a fresh one. A pooled connection the backend
    /// closed before answering is retried once on a fresh connection for idempotent methods only (RFC 9110
    /// §9.2.2): for others the backend may already have acted, so the client gets the 502.
    async fn send_lean(
        &self,
        key: PoolKey,
        method: &http::Method,
        target: &str,
        headers: &http::HeaderMap,
    ) -> Result<Response<lean::LeanBody>> {
        let mut head = Vec::with_capacity(1024);
        lean::encode_head(method, target, headers, &mut head);
        let mut may_pool = true;
        loop {
            let (conn, pooled) = match if may_pool { lean::checkout(&key) } else { None } {
                Some(c) => (c, true),
                None => (lean::Conn::new(self.connect_stream().await?), false),
            };
            match lean::exchange(conn, pooled, key.clone(), method, &head).await {
                Ok(r) => return Ok(r),
                Err(ExchangeError::Stale(_)) if method.is_idempotent() => may_pool = false,
                Err(ExchangeError::Stale(e)) => {
                    return Err(ProxyError::Upstream(format!("{}: {e}", self.describe())))
                }
                Err(ExchangeError::Failed(e)) => {
                    return Err(ProxyError::Upstream(format!("{}: {e}", self.describe())))
                }
            }
        }
    }

    async fn send_pooled(
        &self,
        key: &PoolKey,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>> {
        let mut req = req;
        // A pooled connection can close between the readiness check and the write (the backend's keep-alive
        // ended); hyper then hands the unsent request back and it goes out once on a fresh connection.
        let mut pooled = true;
        loop {
            let mut sender = match if pooled { checkout(key) } else { None } {
                Some(s) => s,
                None => {
                    pooled = false;
                    self.connect().await?
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                        checkin(key, sender);
                    }
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if pooled => {
                        req = back;
                        pooled = false;
                    }
                    _ => {
                        let e = e.into_error();
                        return Err(if is_client_body_error(&e) {
                            ProxyError::ClientBody
                        } else {
                            ProxyError::Upstream(format!("{}: {e}", self.describe()))
                        });
                    }
                },
            }
        }
    }
}

/// The client's own body failed while it was being streamed to the upstream: hyper's client reports that as a
/// "user body" error (the body stream we handed it errored), not as anything the upstream did.
fn is_client_body_error(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    fn idle_count(key: &PoolKey) -> usize {
        POOL.with(|p| p.borrow().len(key))
    }

    /// The periodic sweep drops senders whose connection the backend closed and ones idle past the limit; dropping
    /// the last sender ends hyper's connection task, which closes the socket (the backend sees the end).
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_sweep_drops_closed_and_long_idle_senders() {
        let bound = Duration::from_secs(5);
        let (a, mut peer_a) = UnixStream::pair().unwrap();
        let (b, peer_b) = UnixStream::pair().unwrap();
        let (sa, conn_a) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(a))
            .await
            .unwrap();
        let (sb, conn_b) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(b))
            .await
            .unwrap();
        let (task_a, task_b) = (tokio::spawn(conn_a), tokio::spawn(conn_b));
        let key = |u: &str| PoolKey {
            upstream: u.into(),
            user: None,
        };
        let (ka, kb) = (key("sweep-open"), key("sweep-closed"));
        checkin(&ka, sa);
        checkin(&kb, sb);
        drop(peer_b);
        let _ = tokio::time::timeout(bound, task_b)
            .await
            .expect("conn b ends");
        sweep_idle();
        assert_eq!((idle_count(&ka), idle_count(&kb)), (1, 0));
        tokio::time::advance(crate::pool::IDLE).await;
        sweep_idle();
        assert_eq!(idle_count(&ka), 0, "idle past the limit");
        let _ = tokio::time::timeout(bound, task_a)
            .await
            .expect("conn a ends");
        let mut byte = [0u8; 1];
        assert_eq!(
            peer_a.read(&mut byte).await.unwrap(),
            0,
            "its socket is closed"
        );
    }
}
