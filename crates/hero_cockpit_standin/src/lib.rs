//! `hero_cockpit_standin`: a **named stand-in** for the Hero OS cockpit, and the reference backend
//! of `docs/identity-contract.md`. It never runs a login of its own: every page but `/health`
//! needs the identity hero_proxy injects, verified with `hero_identity` (signed assertion in
//! production). It shows who is signed in and their claims, and lists "My Forge repositories"
//! with the token the proxy passes through (`X-Hero-Forge-Token`), falling back to a token the
//! user stored (`cockpit/USER_FORGE_TOKEN`), and says which one it used.
//!
//! Every request that reaches it is appended to its request log (JSON lines: method, path, the
//! verified user or none), so a test can prove that a request without a session never got here.

pub mod page;
pub mod repos;
pub mod request_log;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, FromRef, Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hero_identity::{Identity, IdentityVerifier};
use hero_secrets::SecretStore;

pub use repos::{RepoList, TokenSource};
pub use request_log::{LoggedRequest, RequestLog};

/// Secret slot of the token a user stored themselves, used when the proxy passes none.
pub const USER_FORGE_TOKEN_SLOT: &str = "cockpit/USER_FORGE_TOKEN";

/// Everything a request needs.
#[derive(Clone)]
pub struct Cockpit {
    /// How identity headers are trusted (signed in production).
    pub verifier: IdentityVerifier,
    /// Forge base URL (`https://forge.ourworld.tf`), for `GET /api/v1/user/repos`.
    pub forge_url: String,
    /// Where the fallback token lives; `None` = no fallback.
    pub secrets: Option<Arc<dyn SecretStore>>,
    /// The request log.
    pub log: Arc<RequestLog>,
    /// HTTP client for Forge (bounded timeouts).
    pub http: reqwest::Client,
}

impl FromRef<Cockpit> for IdentityVerifier {
    fn from_ref(c: &Cockpit) -> IdentityVerifier {
        c.verifier.clone()
    }
}

/// Settings of [`Cockpit::new`].
pub struct CockpitConfig {
    pub verifier: IdentityVerifier,
    pub forge_url: String,
    pub secrets: Option<Arc<dyn SecretStore>>,
    pub request_log: PathBuf,
}

impl Cockpit {
    /// Opens the request log and builds the Forge client.
    pub fn new(cfg: CockpitConfig) -> anyhow::Result<Cockpit> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .connect_timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Cockpit {
            verifier: cfg.verifier,
            forge_url: cfg.forge_url.trim_end_matches('/').to_owned(),
            secrets: cfg.secrets,
            log: Arc::new(RequestLog::open(&cfg.request_log)?),
            http,
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Logs every request with the identity it carries (verified, or none). The identity it
/// establishes is put in the request's extensions, where the `Identity` extractor finds it.
async fn log_requests(State(c): State<Cockpit>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ci| ci.0);
    let identity = c.verifier.verify_headers(req.headers(), peer, unix_now());
    let user = identity.as_ref().ok().map(|i| i.user.clone());
    if let Ok(id) = identity {
        req.extensions_mut().insert(id);
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    c.log.append(&LoggedRequest {
        method,
        path,
        user,
        status: resp.status().as_u16(),
    });
    resp
}

/// The router: `/health` (no identity), `/` (HTML), `/api/me` (the same as JSON).
pub fn app(c: Cockpit) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/", get(home))
        .route("/api/me", get(me))
        .layer(axum::middleware::from_fn_with_state(
            c.clone(),
            log_requests,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(c)
}

/// What every answer carries, as the reference backend of the identity contract should: the page is one person's
/// (their private repositories), so no shared cache may keep it; nothing may frame it; it loads nothing, runs no
/// script and sends no Referer (a repository link must not leak the cockpit's URL).
async fn security_headers(mut resp: Response) -> Response {
    use axum::http::{header, HeaderValue};
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// What the cockpit knows about the signed-in person.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Me {
    pub user: String,
    pub claims: Vec<String>,
    pub provider: String,
    pub external_id: String,
    pub context: Option<String>,
    pub verified: bool,
    pub repositories: RepoList,
}

async fn me_of(c: &Cockpit, id: Identity, headers: &http::HeaderMap) -> Me {
    let repositories = repos::my_repositories(c, &id, headers).await;
    Me {
        user: id.user,
        claims: id.claims.iter().map(|c| c.as_str().to_owned()).collect(),
        provider: id.provider,
        external_id: id.external_id,
        context: id.context,
        verified: id.verified,
        repositories,
    }
}

async fn home(State(c): State<Cockpit>, id: Identity, headers: http::HeaderMap) -> Response {
    let me = me_of(&c, id, &headers).await;
    Html(page::render(&me)).into_response()
}

async fn me(State(c): State<Cockpit>, id: Identity, headers: http::HeaderMap) -> Json<Me> {
    Json(me_of(&c, id, &headers).await)
}
