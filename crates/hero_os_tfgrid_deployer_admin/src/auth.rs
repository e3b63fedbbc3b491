//! Who is asking, and may they be here.
//!
//! Identity comes only from the SSO edge's injected headers (`hero_identity`):
//! * [`AuthMode::Signed`] (production): `X-Hero-Assertion` must verify against hero_proxy's key;
//! * [`AuthMode::Headers`]: plain `X-Hero-User` / `X-Hero-Claims`, trusted because the dashboard is
//!   reachable only through the proxy: its unix socket only (`main.rs` refuses `--listen`, since any
//!   local process can reach a loopback port);
//! * [`AuthMode::Dev`] (DEVELOPMENT ONLY): unix-socket peers, or loopback TCP peers asking for a
//!   loopback `Host` (see [`loopback_host`]); plain headers when present, else a fixed dev user;
//!   every page shows a banner.
//!
//! Access: the Forge username must be in the secret `deployer/ADMIN_FORGE_USERS` (comma-separated,
//! re-read on every request, so an edit takes effect at once) or the identity must hold the
//! claim `groups.admin`. No identity → 401, identity but not allowed → 403 naming the account.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hero_identity::{AssertionVerifier, Identity, IdentityError, IdentityVerifier};
use hero_os_tfgrid_deployer_sdk::Client;

use crate::pages::errors;
use crate::state::{AppState, ALLOWLIST_SLOT};

/// How identity headers are trusted.
#[derive(Clone, Debug)]
pub enum AuthMode {
    Signed(AssertionVerifier),
    Headers,
    Dev { user: String },
}

impl AuthMode {
    pub fn is_dev(&self) -> bool {
        matches!(self, AuthMode::Dev { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            AuthMode::Signed(_) => "signed",
            AuthMode::Headers => "headers",
            AuthMode::Dev { .. } => "dev",
        }
    }
}

/// Which listener a request came through; set by [`crate::serve`] on the unix-socket router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixPeer;

/// The signed-in, allowed admin; handlers take it as an `Extension`.
#[derive(Clone)]
pub struct Admin {
    /// Who the admin is, as the audit log names them ([`actor_name`]: the Forge login for a Forge identity).
    pub user: String,
    /// How they got in: `allowlist` or `groups.admin`.
    pub via: &'static str,
    /// SDK client acting as this admin.
    pub client: Client,
    /// CSRF token for their forms.
    pub csrf: String,
    /// The claimed one-time form tokens (see [`crate::once`]).
    pub once: std::sync::Arc<crate::once::OnceTokens>,
    /// Dev mode banner.
    pub dev: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Establishes the identity of a request under `mode`. `peer` is the TCP peer (None on the unix
/// socket, where `unix` is true).
pub fn identify(
    mode: &AuthMode,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    unix: bool,
) -> Result<Identity, IdentityError> {
    // hero_identity's parser of plain headers, applied after our own transport check, decided
    // here per mode.
    let unsigned =
        |h: &HeaderMap| IdentityVerifier::TrustedTransport.verify_headers(h, None, now());
    match mode {
        AuthMode::Signed(v) => {
            IdentityVerifier::Signed(v.clone()).verify_headers(headers, peer, now())
        }
        AuthMode::Headers => unsigned(headers),
        AuthMode::Dev { user } => {
            let local = unix
                || (peer.is_some_and(|p| p.ip().is_loopback())
                    && hero_identity::is_loopback_host(headers));
            if !local {
                return Err(IdentityError::DevModeNotLoopback);
            }
            if headers.contains_key(hero_identity::X_HERO_USER) {
                unsigned(headers)
            } else {
                Ok(Identity {
                    user: user.clone(),
                    context: None,
                    claims: Vec::new(),
                    provider: "dev".into(),
                    login: user.clone(),
                    external_id: String::new(),
                    expires_at: None,
                    verified: false,
                })
            }
        }
    }
}

/// Parses the allowlist secret with the one parser hero_proxy uses too.
pub fn parse_allowlist(value: &str) -> Vec<String> {
    hero_secrets::slots::parse_login_list(value)
        .into_iter()
        .collect()
}

/// The provider id hero_proxy gives Forge (its default `provider` and `admin_provider`): the allowlist holds Forge
/// logins, so only a Forge identity can match it.
pub const FORGE_PROVIDER: &str = "forge";

/// Why an identified user is let in, if they are: their **Forge login** is on the allowlist, or they hold
/// `groups.admin`.
///
/// Why the login and the provider, never the local username: the local name is the proxy's first-come, lossy
/// mapping of a login (`bob.smith` signing in first holds `bob-smith`, so the real `bob-smith` becomes
/// `bob-smith-2`), and another provider's `alice` is not Forge's. An unsigned identity that names no provider
/// (dev mode's own, or plain headers without `X-Hero-Provider`, which `hero_identity` calls `dev`) is taken at
/// its transport's word, as those modes take everything.
pub fn admitted(identity: &Identity, allowlist: &[String]) -> Option<&'static str> {
    let login = identity.login.to_ascii_lowercase();
    if is_forge(identity) && !login.is_empty() && allowlist.contains(&login) {
        Some("allowlist")
    } else if identity.is_admin() {
        Some("groups.admin")
    } else {
        None
    }
}

/// Whether `identity`'s login is a Forge login the allowlist can hold ([`admitted`] says why the unsigned `dev`
/// provider counts).
pub fn is_forge(identity: &Identity) -> bool {
    identity.provider == FORGE_PROVIDER || (!identity.verified && identity.provider == "dev")
}

/// The name the server's audit log and jobs record for this admin, and the dashboard shows: the Forge login for a
/// Forge identity, `<login>@<provider>` for another provider's. Why not the local username: it is the proxy's
/// first-come mapping ([`admitted`]), so Forge's `alice` may act as `alice-2` and another provider's `alice` as
/// `alice`: the log would name the wrong person. A Forge login never holds `@`, so the two forms cannot meet.
/// A login that is empty or not printable ASCII (the server records only that) falls back to the local username.
pub fn actor_name(identity: &Identity) -> String {
    let login = identity.login.as_str();
    let printable =
        !login.is_empty() && login.len() <= 64 && login.bytes().all(|b| b.is_ascii_graphic());
    match (printable, is_forge(identity)) {
        (true, true) => login.to_owned(),
        (true, false) => format!("{login}@{}", identity.provider),
        (false, _) => identity.user.clone(),
    }
}

/// Middleware on every page: 401 without identity, 403 when not admitted, 503 when the
/// allowlist cannot be read (fail closed). Inserts [`Admin`].
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let unix = req.extensions().get::<UnixPeer>().is_some();
    let dev = state.auth().is_dev();
    let identity = match identify(state.auth(), req.headers(), peer, unix) {
        Ok(id) => id,
        Err(e) => {
            tracing::info!(code = e.code(), "request without a trustworthy identity");
            return errors::unauthorized(&e, dev).into_response();
        }
    };
    let allowlist = match state.secrets().get(ALLOWLIST_SLOT).await {
        Ok(Some(v)) => parse_allowlist(v.expose()),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the admin allowlist");
            return errors::allowlist_unavailable(dev).into_response();
        }
    };
    let Some(via) = admitted(&identity, &allowlist) else {
        tracing::info!(user = %identity.user, "signed-in user is not an admin");
        return errors::forbidden(&identity, dev).into_response();
    };
    let actor = actor_name(&identity);
    let client = match state.client_for(&actor) {
        Ok(c) => c,
        Err(_) => {
            return errors::unauthorized(&IdentityError::Malformed("unusable user name"), dev)
                .into_response()
        }
    };
    let admin = Admin {
        csrf: state.csrf().token(&actor),
        once: state.once(),
        user: actor,
        via,
        client,
        dev,
    };
    req.extensions_mut().insert(admin);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                *k,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        m
    }

    #[test]
    fn allowlist_parsing_and_admission() {
        let list = parse_allowlist(" Alice, bob ,,\ncarol ");
        assert_eq!(list, vec!["alice", "bob", "carol"]);
        let mut id = identify(
            &AuthMode::Headers,
            &h(&[("x-hero-user", "alice")]),
            None,
            true,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(admitted(&id, &list), Some("allowlist"));
        id.user = "mallory".into();
        id.login = "mallory".into();
        assert_eq!(admitted(&id, &list), None);
        // The Forge login decides, not the local name: Forge `bob.smith` holding local `bob` is not `bob`, and
        // Forge `bob` holding `bob-2` is.
        let as_proxy_says = |user: &str, login: &str, provider: &str| {
            identify(
                &AuthMode::Headers,
                &h(&[
                    ("x-hero-user", user),
                    ("x-hero-login", login),
                    ("x-hero-provider", provider),
                ]),
                None,
                true,
            )
            .unwrap_or_else(|e| unreachable!("{e}"))
        };
        assert_eq!(
            admitted(&as_proxy_says("bob", "bob.smith", "forge"), &list),
            None
        );
        assert_eq!(
            admitted(&as_proxy_says("bob-2", "Bob", "forge"), &list),
            Some("allowlist")
        );
        // Another provider's `alice` is not Forge's.
        assert_eq!(
            admitted(&as_proxy_says("alice", "alice", "github"), &list),
            None
        );
        let id = identify(
            &AuthMode::Headers,
            &h(&[
                ("x-hero-user", "mallory"),
                ("x-hero-claims", "groups.admin,users.mallory"),
            ]),
            None,
            true,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(admitted(&id, &list), Some("groups.admin"));
    }

    #[test]
    fn the_actor_is_the_forge_login_or_login_at_provider_never_the_lossy_local_name() {
        let id = |user: &str, login: Option<&str>, provider: Option<&str>| {
            let mut headers = vec![("x-hero-user", user)];
            headers.extend(login.map(|l| ("x-hero-login", l)));
            headers.extend(provider.map(|p| ("x-hero-provider", p)));
            identify(&AuthMode::Headers, &h(&headers), None, true)
                .unwrap_or_else(|e| unreachable!("{e}"))
        };
        for (user, login, provider, actor) in [
            // Forge's `alice`, who signed in after another provider's `alice` took the local name.
            ("alice-2", Some("alice"), Some("forge"), "alice"),
            ("bob-smith", Some("bob.smith"), Some("forge"), "bob.smith"),
            // Another provider's `alice` holding the local name `alice` is not Forge's alice.
            ("alice", Some("alice"), Some("github"), "alice@github"),
            // Unsigned headers without a provider (`dev`), and without a login: as the transport says.
            ("dora", None, None, "dora"),
            // A login the server could not record (not printable ASCII): the local name.
            ("eve", Some("a b"), Some("github"), "eve"),
        ] {
            assert_eq!(
                actor_name(&id(user, login, provider)),
                actor,
                "{user} {login:?} {provider:?}"
            );
        }
        // Headers are ASCII, but a signed assertion's login is JSON and may not be.
        let mut signed = id("jose", Some("jose"), Some("forge"));
        signed.login = "jos\u{e9}".into();
        assert_eq!(actor_name(&signed), "jose");
    }

    #[test]
    fn dev_mode_is_local_only_and_has_a_fixed_user() {
        let mode = AuthMode::Dev { user: "dev".into() };
        let remote: SocketAddr = "10.0.0.1:5000".parse().unwrap_or_else(|_| unreachable!());
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap_or_else(|_| unreachable!());
        assert!(identify(&mode, &HeaderMap::new(), Some(remote), false).is_err());
        let host = h(&[("host", "127.0.0.1:5000")]);
        assert!(identify(&mode, &host, Some(remote), false).is_err());
        let id = identify(&mode, &host, Some(local), false);
        assert_eq!(id.map(|i| i.user).ok().as_deref(), Some("dev"));
        // A loopback peer without a loopback Host (a DNS-rebound page) is not local.
        assert!(identify(&mode, &HeaderMap::new(), Some(local), false).is_err());
        let id = identify(&mode, &h(&[("x-hero-user", "eve")]), None, true);
        assert_eq!(id.map(|i| i.user).ok().as_deref(), Some("eve"));
        assert!(identify(&AuthMode::Headers, &HeaderMap::new(), None, true).is_err());
    }
}
