//! WebSocket tunnels: after a `101`, the proxy pipes bytes between the browser and the backend — for as long as
//! the access that opened the tunnel still holds, and no longer.
//!
//! Why: a request is checked once, but a tunnel can stay open for days (a terminal in the cockpit). Before, it
//! outlived everything that ends access — sign-out, a revoked session, a disabled user, a claim or an admin name
//! taken away, the route's policy changed or the route removed, the session's own idle and absolute timeouts —
//! so a fired admin kept their shell. Now a tunnel is checked again, by the same decision a request gets
//! ([`App::verdict`]), whenever access may have changed ([`crate::session::Sessions::watch_access`]: every change
//! of sessions, users, claims and routes made through this proxy) and at least every `tunnel_recheck_secs`
//! (default 30: the admin allowlist and the owner slot live in the secret store, which other processes write
//! without telling the proxy), and closed at the first check that fails.
//!
//! A check looks the session up as a request does, so it counts as use: an open tunnel keeps its session from
//! idling out, and the session's absolute lifetime still ends both.
//!
//! What it does not do: refresh the provider token. A tunnel is closed when its session ends, not when the
//! token ages; the refresh happens on the person's next request, as for any page.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::app::App;
use crate::config::RouteConfig;
use crate::routes::{Policy, Route};

/// What opened a tunnel: the request's canonical host and path, the route as it was then, and the session
/// cookie if a session was attached (its identity went to the backend with the handshake).
pub struct Grant {
    pub host: Option<String>,
    pub path: String,
    pub route: RouteConfig,
    pub cookie: Option<String>,
}

impl Grant {
    /// The grant of a request about to be forwarded on `route`.
    pub fn new(host: Option<String>, path: &str, route: &Route, cookie: Option<String>) -> Grant {
        Grant {
            host,
            path: path.to_owned(),
            route: route.to_config(),
            cookie,
        }
    }
}

impl App {
    /// Whether the access that opened a tunnel still holds: the same route (unchanged) still serves its target,
    /// and the session, if there was one, is still live and still passes the route's policy.
    pub(crate) async fn still_admits(&self, grant: &Grant) -> bool {
        let route = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            match routes.find_unambiguous(grant.host.as_deref(), &grant.path) {
                Ok(Some(r)) => r,
                _ => return false,
            }
        };
        if route.to_config() != grant.route {
            return false;
        }
        let Some(cookie) = &grant.cookie else {
            // Opened without a session: only a public route admits that, and the route is unchanged.
            return route.policy == Policy::Public;
        };
        match self.sessions.lookup(cookie, self.clock.now()) {
            Ok(Some(s)) => matches!(
                self.verdict(&route, &s).await,
                Ok(crate::handler::Verdict::Owner | crate::handler::Verdict::Admitted)
            ),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(code = e.code(), error = %e, "session unreadable; tunnel closed");
                false
            }
        }
    }
}

/// Pipes the two ends once both upgrades complete, until either side closes or the grant no longer holds.
pub fn open(app: Arc<App>, grant: Grant, client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(ends) => ends,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
        let pipe = tokio::io::copy_bidirectional(&mut c, &mut u);
        tokio::pin!(pipe);
        // Subscribed before the first check, which runs at once: a change between the request's own check and
        // this point is not missed (a receiver only sees changes made after it subscribed).
        let mut changes = app.sessions.watch_access();
        let every = Duration::from_secs(app.cfg.tunnel_recheck_secs);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            if !app.still_admits(&grant).await {
                tracing::info!(route = %grant.route.id.as_deref().unwrap_or(""),
                    "WebSocket tunnel closed: the access that opened it ended");
                // Dropping the pipe closes both ends.
                return;
            }
            tokio::select! {
                _ = &mut pipe => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return; // the proxy is going away
                    }
                }
                _ = tick.tick() => {}
            }
        }
    });
}
