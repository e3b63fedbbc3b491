//! Listeners and background tasks: the public HTTP/1.1 listener (keep-alive, upgrades, optional TLS), the admin RPC socket,
//! the state sweep and the admin-session sweep.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hero_secrets::SecretStore;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::Result;
use crate::handler::Client;
use crate::store::Store;

/// A running proxy; dropping it stops the listeners.
pub struct Running {
    /// Bound public address (port 0 in the config gives a free port).
    pub addr: SocketAddr,
    /// Shared state (tests inspect it).
    pub app: Arc<App>,
    /// Admin RPC socket path.
    pub rpc_socket: std::path::PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens the database, builds the state, binds the listeners and spawns the tasks.
///
/// Worker 0 runs on the caller's runtime, and the upstream pools are per thread: the binary calls this from a
/// current-thread runtime, so that worker's requests and its pool sweep share one thread. On a multi-threaded
/// runtime (some tests) it still works, but the sweep only reaches the pools of whichever thread it runs on.
pub async fn start(
    cfg: Config,
    secrets: Arc<dyn SecretStore>,
    clock: Arc<dyn Clock>,
) -> Result<Running> {
    let tls = crate::tls::acceptor(&cfg)?;
    let store = Arc::new(Store::open(&cfg.state_dir.join("hero_proxy.db"))?);
    let listener = reuseport_listener(cfg.listen)?;
    let addr = listener.local_addr()?;
    let workers = cfg
        .workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let rpc_socket = cfg.rpc_socket();
    let app = Arc::new(App::new(cfg, store, secrets, clock).await?);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(serve(
        app.clone(),
        listener,
        tls.clone(),
        stop_rx.clone(),
    ))];
    for i in 1..workers {
        let (app, tls, stop_rx) = (app.clone(), tls.clone(), stop_rx.clone());
        std::thread::Builder::new()
            .name(format!("hero_proxy-w{i}"))
            .spawn(move || worker(app, addr, tls, stop_rx))?;
    }
    tasks.push(tokio::spawn(crate::rpc::serve(
        app.clone(),
        rpc_socket.clone(),
        stop_rx,
    )?));
    let sweeper = app.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let now = sweeper.clock.now();
            sweeper.logins.sweep(now);
            if let Err(e) = sweeper.sweep_admin_sessions().await {
                tracing::warn!(error = %e, "admin session sweep failed");
            }
            if let Err(e) = sweeper.sweep_sessions().await {
                tracing::warn!(error = %e, "session sweep failed");
            }
        }
    }));
    tracing::info!(%addr, tls = tls.is_some(), rpc = %rpc_socket.display(), "hero_proxy listening");
    Ok(Running {
        addr,
        app,
        rpc_socket,
        stop,
        tasks,
    })
}

/// A listener with `SO_REUSEPORT`, so every worker binds the same address and the kernel spreads connections.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.set_nodelay(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// An extra accept loop on its own single-threaded runtime.
fn worker(app: Arc<App>, addr: SocketAddr, tls: Option<TlsAcceptor>, stop: watch::Receiver<bool>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "worker runtime failed");
            return;
        }
    };
    rt.block_on(async move {
        match reuseport_listener(addr) {
            Ok(l) => serve(app, l, tls, stop).await,
            Err(e) => tracing::error!(error = %e, "worker listener failed"),
        }
    });
}

/// How often each worker thread drops the idle upstream connections nobody will take any more.
const POOL_SWEEP: Duration = Duration::from_secs(30);

async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    // The upstream pools are per thread, so each accept loop sweeps its own thread's.
    let mut sweep = tokio::time::interval(POOL_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = sweep.tick() => {
                crate::lean::sweep_idle();
                crate::upstream::sweep_idle();
                continue;
            }
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(app, stream, peer).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => serve_connection(app, s, peer).await,
                    Err(e) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                },
            }
        });
    }
}

/// One HTTP/1.1 connection (keep-alive, upgrades) over plain TCP or TLS, with every wait bounded:
/// * the request head must arrive within `header_read_timeout_secs` (hyper only enforces this with a timer set:
///   without one its default silently does nothing), which also bounds a kept-alive connection between requests;
/// * a connection on which nothing moves for `idle_timeout_secs` is closed (a body trickled in and stopped, a
///   client that stopped reading its response): [`ActivityIo`] counts reads and writes, and a watchdog closes the
///   connection when the count has not changed over one whole period;
/// * waits on upstreams are bounded in `Upstream::send`.
///
/// A WebSocket tunnel leaves this function at its 101 and is not subject to the idle rule (its idle periods are
/// the application's, kept alive by its own pings).
async fn serve_connection<I>(app: Arc<App>, io: I, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = Duration::from_secs(app.cfg.header_read_timeout_secs);
    let idle = Duration::from_secs(app.cfg.idle_timeout_secs);
    let client = Arc::new(Client::new(peer));
    let svc = service_fn(move |req| {
        let (app, client) = (app.clone(), client.clone());
        async move { Ok::<_, Infallible>(app.handle(req, &client).await) }
    });
    let activity = Arc::new(AtomicU64::new(0));
    let io = ActivityIo {
        inner: io,
        activity: activity.clone(),
    };
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let mut seen = activity.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    loop {
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tick.tick() => {
                let now = activity.load(Ordering::Relaxed);
                if now == seen {
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
                seen = now;
            }
        }
    }
}

/// Counts reads and writes that moved bytes, for the idle watchdog of [`serve_connection`].
struct ActivityIo<I> {
    inner: I,
    activity: Arc<AtomicU64>,
}

impl<I: AsyncRead + Unpin> AsyncRead for ActivityIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ActivityIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
