//! Upstreams over TCP or unix sockets, with keep-alive HTTP/1.1 connections (hyper's connection-level client):
//! a client connection keeps the upstream connections it uses and drives them in its own task ([`Affine`]);
//! idle ones wait in a small per-thread pool ([`POOL`]) between client connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use crate::error::{ProxyError, Result};

/// Body type of every response the proxy produces.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Where a route sends its requests. Holds no connection itself: connections belong to the client connection
/// using them ([`Affine`]) or wait in the per-thread pool ([`POOL`]), so with one single-threaded runtime per core
/// a request, its upstream connection and the task driving both stay on one thread (nginx's worker model).
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

/// An idle pooled connection is dropped after this long unused (as hyper-util's pool did), so connections a
/// backend has silently forgotten are not kept for ever.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// At most this many idle connections are kept per upstream and thread.
const POOL_MAX_IDLE: usize = 512;

/// A connection's driving future (hyper's `Connection`): requests on the connection make progress only while
/// whoever holds it polls it.
type ConnFuture = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One upstream connection: the sender for requests and the future that drives it.
struct Conn {
    sender: SendRequest<Incoming>,
    conn: ConnFuture,
}

impl Conn {
    /// Polls the connection once without a waker, to take in what already happened on it (the backend closed
    /// it, most often). Nobody drives a connection while it is idle in the pool, so this is how a pooled
    /// connection's close is noticed before a request is written to it. False if it is finished.
    fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.conn.as_mut().poll(&mut cx).is_pending()
            && !self.sender.is_closed()
            && self.sender.is_ready()
    }

    /// Drives the connection in a task of its own (for a connection that leaves the client connection's task:
    /// a WebSocket tunnel, or one that did not fit in [`Affine`]).
    fn spawn(self) -> SendRequest<Incoming> {
        let conn = self.conn;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        self.sender
    }
}

/// A pooled connection and when it was put back.
type IdleConn = (Conn, Instant);

thread_local! {
    /// Per-thread pool: per upstream (its [`Upstream::key`]), a stack of idle connections with the time each was
    /// put back, most recent last. Idle connections are not driven (see [`Conn::alive`]); a request takes one
    /// into its client connection's [`Affine`] and that task drives it from then on.
    static POOL: RefCell<HashMap<Arc<str>, Vec<IdleConn>>> =
        RefCell::new(HashMap::new());
}

/// A live idle connection for `key` from this thread's pool; finished and long-idle ones are dropped on the way.
fn checkout(key: &str) -> Option<Conn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.get_mut(key)?;
        let now = Instant::now();
        idle.retain(|(_, t)| now.duration_since(*t) < POOL_IDLE);
        while let Some((mut c, _)) = idle.pop() {
            if c.alive() {
                return Some(c);
            }
        }
        None
    })
}

/// Puts an idle connection back into this thread's pool under `key`.
fn checkin(key: &Arc<str>, mut c: Conn) {
    if !c.alive() {
        return;
    }
    // `try_with`: a client connection can end while its thread shuts down, when the pool is already gone.
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        let idle = match p.get_mut(key.as_ref()) {
            Some(v) => v,
            None => p.entry(key.clone()).or_default(),
        };
        if idle.len() < POOL_MAX_IDLE {
            idle.push((c, Instant::now()));
        }
    });
}

/// At most this many upstream connections stay with one client connection (one per upstream it talks to);
/// requests to further upstreams use connections driven in tasks of their own.
const AFFINE_MAX: usize = 4;

/// The upstream connections of one client connection, driven by that connection's task ([`Affine::poll_drive`]
/// next to hyper's server connection) rather than each by a task of its own.
///
/// Why: with a task per upstream connection, every request crosses tasks twice (the request is handed to the
/// connection's task, the response head handed back), each a wake-up and a scheduling round; here the request is
/// written and its response read in the same task that serves the client. HTTP/1.1 serves a connection's
/// requests one after another, so one upstream connection per upstream is enough. When the client connection
/// ends, its idle upstream connections go back to the pool for the next one.
#[derive(Default)]
pub struct Affine {
    // A mutex only because hyper's service must be `Send`: the one task that uses it never contends for it.
    conns: Mutex<Vec<AffineConn>>,
    /// A request was handed to one of `conns` since the last [`Affine::take_sent`]: poll them again to write it.
    sent: std::sync::atomic::AtomicBool,
}

struct AffineConn {
    key: Arc<str>,
    /// `None` while a request is out on it (between sending and the response head).
    sender: Option<SendRequest<Incoming>>,
    conn: ConnFuture,
}

impl Affine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AffineConn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls every upstream connection of this client connection; finished ones are removed. Called by the
    /// client connection's task after each poll of its server connection.
    pub fn poll_drive(&self, cx: &mut Context<'_>) {
        self.lock().retain_mut(|c| match c.conn.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(r) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                false
            }
        });
    }

    /// True (once) if a request was handed to one of the connections since the last call.
    pub fn take_sent(&self) -> bool {
        self.sent.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// This client connection's ready sender for `key`. A connection found busy was abandoned mid-exchange (its
    /// client request went away): it is dropped, which closes it.
    fn take(&self, key: &str) -> Option<SendRequest<Incoming>> {
        let mut conns = self.lock();
        let i = conns.iter().position(|c| &*c.key == key)?;
        match conns[i].sender.take() {
            Some(s) if s.is_ready() => {
                self.sent.store(true, std::sync::atomic::Ordering::Relaxed);
                Some(s)
            }
            _ => {
                conns.swap_remove(i);
                None
            }
        }
    }

    /// Keeps `c` with this client connection, its sender out for the request about to be sent. `None` if full:
    /// the connection is then driven by a task of its own.
    fn adopt(&self, key: &Arc<str>, c: Conn) -> SendRequest<Incoming> {
        let mut conns = self.lock();
        // Another connection kept for `key` is one `take` found unusable, or one whose request came back unsent.
        conns.retain(|c| c.key != *key);
        if conns.len() >= AFFINE_MAX {
            return c.spawn();
        }
        conns.push(AffineConn {
            key: key.clone(),
            sender: None,
            conn: c.conn,
        });
        self.sent.store(true, std::sync::atomic::Ordering::Relaxed);
        c.sender
    }

    /// Gives the sender back once its response head has arrived (the next request waits for hyper to say it is
    /// ready again, i.e. that this response's body is done). Without a slot waiting for it (full), it is dropped.
    fn put_back(&self, key: &str, sender: SendRequest<Incoming>) {
        if let Some(c) = self
            .lock()
            .iter_mut()
            .find(|c| &*c.key == key && c.sender.is_none())
        {
            c.sender = Some(sender);
        }
    }
}

impl Drop for Affine {
    fn drop(&mut self) {
        let conns = std::mem::take(&mut *self.lock());
        for c in conns {
            if let Some(sender) = c.sender {
                checkin(
                    &c.key,
                    Conn {
                        sender,
                        conn: c.conn,
                    },
                );
            }
        }
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

    /// A new connection, handshaken (upgrades allowed: a 101 hands the socket to the WebSocket tunnel). Whoever
    /// gets it drives it ([`Affine`] or [`Conn::spawn`]).
    async fn connect(&self) -> std::result::Result<Conn, ProxyError> {
        let fail =
            |e: &dyn std::fmt::Display| ProxyError::Upstream(format!("{}: {e}", self.describe()));
        let handshake = hyper::client::conn::http1::Builder::new();
        let (sender, conn) = match self {
            Upstream::Tcp { authority } => {
                // `http://host` without a port means port 80, as in any HTTP client.
                let a: http::uri::Authority = authority.parse().map_err(|e| fail(&e))?;
                let host = a.host().trim_start_matches('[').trim_end_matches(']');
                let s = TcpStream::connect((host, a.port_u16().unwrap_or(80)))
                    .await
                    .map_err(|e| fail(&e))?;
                let _ = s.set_nodelay(true);
                let (sender, conn) = handshake
                    .handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| fail(&e))?;
                (sender, Box::pin(conn.with_upgrades()) as ConnFuture)
            }
            Upstream::Unix { path, .. } => {
                let s = UnixStream::connect(path.as_path())
                    .await
                    .map_err(|e| fail(&e))?;
                let (sender, conn) = handshake
                    .handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| fail(&e))?;
                (sender, Box::pin(conn.with_upgrades()) as ConnFuture)
            }
        };
        Ok(Conn { sender, conn })
    }

    /// Sends `req` (its URI's path and query are kept) to this upstream, waiting at most `timeout` for the
    /// response head (connect included): a backend that accepts and never answers must not hold the client forever.
    /// With `affine` (the client connection's [`Affine`]) the request goes out on that client connection's own
    /// upstream connection; without (a WebSocket upgrade, whose connection becomes the tunnel), on one driven by a
    /// task of its own and not reused.
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
        timeout: Duration,
        affine: Option<&Affine>,
    ) -> Result<Response<Incoming>> {
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
        match tokio::time::timeout(timeout, self.send_on(req, affine)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout(self.describe())),
            Ok(r) => r,
        }
    }

    /// A sender for a request: the client connection's own, else an idle one from the pool, else a new
    /// connection (`reuse` false: a new one only). True if it served requests before.
    async fn sender(
        &self,
        affine: Option<&Affine>,
        reuse: bool,
    ) -> Result<(SendRequest<Incoming>, bool)> {
        let key = self.key();
        if reuse {
            if let Some(s) = affine.and_then(|a| a.take(key)) {
                return Ok((s, true));
            }
        }
        let (c, reused) = match checkout(key).filter(|_| reuse) {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        let sender = match affine {
            Some(a) => a.adopt(key, c),
            None => c.spawn(),
        };
        Ok((sender, reused))
    }

    async fn send_on(
        &self,
        mut req: Request<Incoming>,
        affine: Option<&Affine>,
    ) -> Result<Response<Incoming>> {
        // A kept connection can close between the readiness check and the write (the backend's keep-alive
        // ended); hyper then hands the unsent request back and it goes out once on a fresh connection.
        let mut reuse = true;
        loop {
            let (mut sender, reused) = self.sender(affine, reuse).await?;
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    if let Some(a) = affine {
                        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                            a.put_back(self.key(), sender);
                        }
                    }
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => {
                        req = back;
                        reuse = false;
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
