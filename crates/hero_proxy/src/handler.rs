//! Request handling: the proxy's own endpoints (`/oauth/login|callback|logout`, the assertion key) and the reverse
//! proxy path (route → policy → header hygiene → identity injection → upstream, WebSocket upgrades included).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hero_identity::{
    AssertionPayload, ASSERTION_ISSUER, PROXY_KEY_PATH, X_HERO_ASSERTION, X_HERO_CLAIMS,
    X_HERO_CONTEXT, X_HERO_EXTERNAL_ID, X_HERO_FORGE_TOKEN, X_HERO_LOGIN, X_HERO_PROVIDER,
    X_HERO_USER,
};
use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST, LOCATION, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_KEY, SET_COOKIE, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::app::App;
use crate::config::KeepTokens;
use crate::error::ProxyError;
use crate::headers::{
    get_cookie, remove_hop_by_hop, remove_session_cookie, set_forwarded, strip_reserved, PeerAddr,
};
use crate::login::{safe_return_to, PendingLogin, StateError};
use crate::oidc::{pkce, random_token};
use crate::pages;
use crate::routes::{Policy, Route};
use crate::session::{clear_cookie, set_cookie, Session, SESSION_COOKIE};
use crate::upstream::ProxyBody;

pub use crate::headers::LOGIN_COOKIE;

// The identity headers as `HeaderName`s: inserting by a `&str` name parses it again on every request.
const HERO_USER: HeaderName = HeaderName::from_static(X_HERO_USER);
const HERO_PROVIDER: HeaderName = HeaderName::from_static(X_HERO_PROVIDER);
const HERO_LOGIN: HeaderName = HeaderName::from_static(X_HERO_LOGIN);
const HERO_EXTERNAL_ID: HeaderName = HeaderName::from_static(X_HERO_EXTERNAL_ID);
const HERO_CLAIMS: HeaderName = HeaderName::from_static(X_HERO_CLAIMS);
const HERO_CONTEXT: HeaderName = HeaderName::from_static(X_HERO_CONTEXT);
const HERO_ASSERTION: HeaderName = HeaderName::from_static(X_HERO_ASSERTION);
const HERO_FORGE_TOKEN: HeaderName = HeaderName::from_static(X_HERO_FORGE_TOKEN);

fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html(status: StatusCode, body: String) -> Response<ProxyBody> {
    respond(status, "text/html; charset=utf-8", body)
}

fn redirect(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut r = respond(status, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn add_cookie(r: &mut Response<ProxyBody>, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(SET_COOKIE, v);
    }
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

/// How a route's policy treats a signed-in session ([`App::verdict`]): the one decision, for a request and for an
/// open tunnel (`crate::tunnel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Admitted as the owner of an `owner` route.
    Owner,
    /// Admitted by any other rule (an admin on an `owner` route included).
    Admitted,
    /// Refused; the words for what they may not see.
    Refused(&'static str),
}

impl Verdict {
    /// Whether the session's Forge token may go to the route's backend (on a `pass_token` route). An `owner`
    /// route's backend runs on the owner's machine, so it gets the owner's own token only: an admin admitted there
    /// to help must not hand the owner a token that acts as the admin on Forge.
    fn token_may_reach(self, route: &Route) -> bool {
        route.policy != Policy::Owner || self == Verdict::Owner
    }
}

/// 400 for a request the proxy refuses to interpret (see `target`): says what is wrong, nothing internal.
fn bad_request(e: &dyn std::fmt::Display) -> Response<ProxyBody> {
    tracing::debug!(error = %e, "bad request refused");
    html(
        StatusCode::BAD_REQUEST,
        pages::plain(
            "Bad request",
            &format!("This address cannot be served: {e}."),
        ),
    )
}

/// The page for a failed upstream request. The person learns what happened in plain words; the address of the
/// backend and the error chain go to the log only.
fn upstream_failed(e: &ProxyError, route: &Route) -> Response<ProxyBody> {
    tracing::warn!(route = %route.id, upstream = %route.upstream.describe(), code = e.code(), error = %e,
        "upstream request failed");
    match e {
        ProxyError::ClientBody => html(
            StatusCode::BAD_REQUEST,
            pages::plain("Bad request", "The request's body was malformed or incomplete."),
        ),
        ProxyError::UpstreamTimeout(_) => html(
            StatusCode::GATEWAY_TIMEOUT,
            pages::plain(
                "Not responding",
                "The machine behind this address did not answer in time. It may be starting or busy; try again in a minute.",
            ),
        ),
        _ => html(
            StatusCode::BAD_GATEWAY,
            pages::plain(
                "Not reachable",
                "The machine behind this address is not reachable right now. It may be starting or stopped; try again in a minute.",
            ),
        ),
    }
}

fn internal(e: &ProxyError) -> Response<ProxyBody> {
    tracing::error!(code = e.code(), error = %e, "request failed");
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::error(
            "Internal error",
            &format!("The proxy failed ({}).", e.code()),
        ),
    )
}

/// One client connection, as its requests see it: built once when the connection is accepted.
#[derive(Debug)]
pub struct Client {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The peer, formatted once for `X-Forwarded-For`.
    pub peer_addr: PeerAddr,
}

impl Client {
    /// The context of a connection from `peer`.
    pub fn new(peer: SocketAddr) -> Client {
        Client {
            peer,
            peer_addr: PeerAddr::new(peer.ip()),
        }
    }
}

impl App {
    /// Entry point for every request on the public listener.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: &Client,
    ) -> Response<ProxyBody> {
        // One canonical target for everything below: dispatch, route matching and what the upstream receives.
        let (path, pq) = match crate::target::canonical_path_and_query(req.uri()) {
            Ok(t) => t,
            Err(e) => return bad_request(&e),
        };
        let host = match crate::target::canonical_host(req.headers(), req.uri(), req.version()) {
            Ok(h) => h,
            Err(e) => return bad_request(&e),
        };
        match path.as_str() {
            "/oauth/login" => self.login(&req, host.as_deref()).await,
            "/oauth/callback" => self.callback(&req).await,
            "/oauth/logout" if req.method() == Method::POST => {
                self.logout(&req, host.as_deref()).await
            }
            "/oauth/logout" => html(StatusCode::OK, pages::confirm_logout()),
            p if p == PROXY_KEY_PATH => {
                respond(StatusCode::OK, "application/json", self.jwks_body.clone())
            }
            _ => self.proxy(req, client, host, &path, pq).await,
        }
    }

    /// `public_url` unless the operator opted in to Host-derived URIs (`redirect_uri_from_host`; the Host is
    /// strictly validated by then).
    fn redirect_uri(&self, host: Option<&str>) -> String {
        match &self.cfg.public_url {
            Some(u) => format!("{}/oauth/callback", u.trim_end_matches('/')),
            None => format!(
                "{}://{}/oauth/callback",
                self.cfg.public_scheme,
                host.unwrap_or("localhost")
            ),
        }
    }

    async fn login(&self, req: &Request<Incoming>, host: Option<&str>) -> Response<ProxyBody> {
        let q = query_map(req.uri().query());
        let provider_id = q
            .get("provider")
            .cloned()
            .unwrap_or_else(|| self.cfg.default_provider.clone());
        let Some(provider) = self.provider(&provider_id) else {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::error("Sign-in unavailable", "No identity provider is configured."),
            );
        };
        let now = self.clock.now();
        let state = random_token(32);
        let nonce = random_token(32);
        let pk = pkce();
        let redirect_uri = self.redirect_uri(host);
        let url = match provider
            .authorize_url(
                &redirect_uri,
                &state,
                &nonce,
                &pk.challenge,
                q.get("login_hint").map(String::as_str),
            )
            .await
        {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "provider discovery failed");
                return html(
                    StatusCode::BAD_GATEWAY,
                    pages::error(
                        "Sign-in unavailable",
                        "The identity provider cannot be reached.",
                    ),
                );
            }
        };
        let pending = PendingLogin {
            state,
            provider: provider_id,
            nonce,
            verifier: pk.verifier,
            return_to: safe_return_to(q.get("rd").map(String::as_str)),
            redirect_uri,
            created_at: now,
        };
        let Some(entries) = self
            .logins
            .start(get_cookie(req.headers(), LOGIN_COOKIE), &pending)
        else {
            tracing::error!("a sign-in could not be sealed into its cookie");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::error("Sign-in unavailable", "Try signing in again."),
            );
        };
        let mut r = redirect(StatusCode::FOUND, &url);
        add_cookie(
            &mut r,
            &login_cookie(&entries, self.cfg.login_state_ttl_secs),
        );
        r
    }

    /// The callback; whatever its outcome, a sign-in this browser's login cookie held is taken out of it (used up
    /// or refused, it can never succeed again), and the cookie goes with its last one.
    async fn callback(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let q = query_map(req.uri().query());
        let now = self.clock.now();
        let state = q.get("state").map_or("", String::as_str);
        // Only the browser holding the sealed sign-in can use it: whoever opens a leaked callback URL without the
        // login cookie finds nothing, and the sign-in of the browser that started it is untouched.
        let (pending, rest) =
            self.logins
                .finish(get_cookie(req.headers(), LOGIN_COOKIE), state, now);
        let mut r = self.callback_outcome(req, &q, pending, now).await;
        if let Some(rest) = rest {
            let max_age = if rest.is_empty() {
                0
            } else {
                self.cfg.login_state_ttl_secs
            };
            add_cookie(&mut r, &login_cookie(&rest, max_age));
        }
        r
    }

    async fn callback_outcome(
        &self,
        req: &Request<Incoming>,
        q: &HashMap<String, String>,
        pending: Result<PendingLogin, StateError>,
        now: u64,
    ) -> Response<ProxyBody> {
        let bad = |msg: &str| html(StatusCode::BAD_REQUEST, pages::error("Sign-in failed", msg));
        if q.get("state").is_none() {
            return bad("The sign-in response has no state.");
        }
        let pending = match pending {
            Ok(p) => p,
            Err(StateError::NotThisBrowser) => {
                return bad("This sign-in was started in another browser.")
            }
            Err(StateError::Used) => return bad("This sign-in link was already used."),
            Err(StateError::Expired) => return bad("This sign-in attempt expired."),
        };
        if let Some(err) = q.get("error") {
            tracing::info!(
                error = oauth_error_code(err),
                "provider returned an error to the callback"
            );
            return bad("The identity provider refused the sign-in.");
        }
        let Some(code) = q.get("code") else {
            return bad("The sign-in response has no code.");
        };
        let Some(provider) = self.provider(&pending.provider) else {
            return bad("Unknown provider.");
        };
        let result = async {
            let tokens = provider
                .exchange_code(code, &pending.verifier, &pending.redirect_uri)
                .await?;
            let id_token = tokens
                .id_token
                .as_deref()
                .ok_or(ProxyError::LoginRejected("no id_token"))?;
            let claims = provider
                .validate_id_token(id_token, Some(&pending.nonce), now)
                .await?;
            // No login name, no sign-in: Forgejo leaves `preferred_username` out when the grant lacks `profile`
            // (the scope in the authorize URL is the browser's to edit). Falling back to `sub`, the numeric
            // account id, would put ids among login names, where the owner and admin checks match.
            let login = claims
                .preferred_username
                .clone()
                .filter(|l| !l.is_empty())
                .ok_or(ProxyError::LoginRejected(
                    "the id_token has no preferred_username (granted without the profile scope?)",
                ))?;
            let user = self
                .store
                .provision(&provider.id, &claims.sub, &login, now)?;
            if user.disabled {
                return Err(ProxyError::LoginRejected("account disabled"));
            }
            self.apply_group_map(user.id, &claims.groups)?;
            let keep = match self.cfg.keep_tokens {
                KeepTokens::Everyone => true,
                KeepTokens::Owner => self.owner_allowed(&user).await?,
            };
            let _identity = self.vault.lock_identity(&provider.id, &claims.sub).await;
            if keep {
                self.vault
                    .put(&provider.id, &claims.sub, &tokens, now)
                    .await?;
            } else {
                self.vault
                    .put_expiry_only(&provider.id, &claims.sub, &tokens, now)
                    .await?;
            }
            self.sessions.bump_generation();
            let sid = self.sessions.create(&user, now)?;
            tracing::info!(user = %user.username, provider = %provider.id, "signed in");
            Ok::<_, ProxyError>(sid)
        }
        .await;
        match result {
            Ok(sid) => {
                // The session this browser held before (another account's, or an older one of the same) is
                // replaced by the new cookie: end it here rather than leave it live, unreachable, until it times out.
                if let Some(old) = get_cookie(req.headers(), SESSION_COOKIE) {
                    if let Err(e) = self.sign_out(&crate::session::hash_id(old)).await {
                        tracing::warn!(code = e.code(), error = %e, "the replaced session could not be ended");
                    }
                }
                let mut r = redirect(StatusCode::SEE_OTHER, &pending.return_to);
                add_cookie(&mut r, &set_cookie(&sid, self.sessions.absolute_secs()));
                r
            }
            Err(ProxyError::LoginRejected(why)) => {
                tracing::warn!(reason = why, "sign-in rejected");
                bad("The sign-in could not be verified.")
            }
            // The identity provider failing mid-login is its outage, not ours: 502 and a plain word.
            Err(e @ ProxyError::Provider(_)) => {
                tracing::warn!(code = e.code(), error = %e, "identity provider failed during sign-in");
                html(
                    StatusCode::BAD_GATEWAY,
                    pages::error(
                        "Sign-in unavailable",
                        "The identity provider did not answer; try signing in again in a minute.",
                    ),
                )
            }
            Err(e) => internal(&e),
        }
    }

    fn apply_group_map(&self, user_id: i64, forge_groups: &[String]) -> Result<(), ProxyError> {
        if self.cfg.group_map.is_empty() {
            return Ok(());
        }
        let targets: BTreeSet<String> = self.cfg.group_map.values().flatten().cloned().collect();
        let wanted: BTreeSet<String> = forge_groups
            .iter()
            .filter_map(|g| self.cfg.group_map.get(g))
            .flatten()
            .cloned()
            .collect();
        self.store.sync_mapped_groups(user_id, &targets, &wanted)
    }

    /// Brings a signed-in identity up to date from the id_token of a refresh: its Forge login and the groups
    /// mapped from its Forge teams. Why: both were read only at sign-in, and a session refreshes for up to its
    /// absolute timeout (7 days), so someone taken off a Forge team kept the `claim:` routes that team opened for
    /// that long. The token must be valid as at sign-in (signature, issuer, audience, expiry) and name the same
    /// subject.
    async fn refresh_identity(
        &self,
        provider: &crate::oidc::Provider,
        user: &crate::store::User,
        id_token: &str,
        now: u64,
    ) -> Result<(), ProxyError> {
        let claims = provider.validate_id_token(id_token, None, now).await?;
        if claims.sub != user.external_id {
            return Err(ProxyError::LoginRejected(
                "the refreshed id_token names another subject",
            ));
        }
        // As at sign-in, only a login name is a login name: without one the stored name stays.
        let login = claims
            .preferred_username
            .as_deref()
            .filter(|l| !l.is_empty())
            .unwrap_or(&user.forge_username);
        self.store
            .provision(&provider.id, &claims.sub, login, now)?;
        self.apply_group_map(user.id, &claims.groups)?;
        self.sessions.bump_generation();
        Ok(())
    }

    /// Signs out, by POST only and never from another site: a GET (a link, an image) any page can make the
    /// browser send, so a plain GET logout lets any site sign the person out. A browser says where a POST comes
    /// from (`Sec-Fetch-Site`, else `Origin`); one from another site is refused.
    async fn logout(&self, req: &Request<Incoming>, host: Option<&str>) -> Response<ProxyBody> {
        let h = req.headers();
        let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let same_origin = match (
            site,
            h.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()),
        ) {
            (Some(s), _) => s == "same-origin" || s == "none",
            (None, Some(origin)) => {
                let ours = match &self.cfg.public_url {
                    Some(u) => u.trim_end_matches('/').to_owned(),
                    None => format!("{}://{}", self.cfg.public_scheme, host.unwrap_or("")),
                };
                origin.eq_ignore_ascii_case(&ours)
            }
            (None, None) => true,
        };
        if !same_origin {
            return html(
                StatusCode::FORBIDDEN,
                pages::plain("Not signed out", "A sign-out must come from this site."),
            );
        }
        if let Some(c) = get_cookie(req.headers(), SESSION_COOKIE) {
            if let Err(e) = self.sign_out(&crate::session::hash_id(c)).await {
                return internal(&e);
            }
        }
        let mut r = html(StatusCode::OK, pages::signed_out());
        add_cookie(&mut r, &clear_cookie());
        r
    }

    /// Ends the session; with the person's last session the proxy also forgets their Forge tokens
    /// ([`App::end_then_forget_unused_tokens`]); other devices' sessions keep them.
    async fn sign_out(&self, id_hash: &str) -> crate::error::Result<()> {
        let Some(row) = self.store.session(id_hash)? else {
            return Ok(());
        };
        let Some(user) = self.store.user(row.user_id)? else {
            self.sessions.revoke(id_hash)?;
            return Ok(());
        };
        let end = || self.sessions.revoke(id_hash).map(drop);
        if self.end_then_forget_unused_tokens(&user, end).await? {
            tracing::info!(user = %user.username, "signed out; tokens forgotten with the last session");
        }
        Ok(())
    }

    fn unauthenticated(
        &self,
        req: &Request<Incoming>,
        pq: &str,
        clear: bool,
    ) -> Response<ProxyBody> {
        let mut r = if req.method() == Method::GET || req.method() == Method::HEAD {
            let rd: String = url::form_urlencoded::byte_serialize(pq.as_bytes()).collect();
            redirect(StatusCode::FOUND, &format!("/oauth/login?rd={rd}"))
        } else {
            respond(
                StatusCode::UNAUTHORIZED,
                "text/plain; charset=utf-8",
                "sign-in required\n",
            )
        };
        if clear {
            add_cookie(&mut r, &clear_cookie());
        }
        r
    }

    async fn proxy(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        client: &Client,
        host: Option<String>,
        path: &str,
        pq: String,
    ) -> Response<ProxyBody> {
        let route = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            match routes.find_unambiguous(host.as_deref(), path) {
                Ok(r) => r,
                Err(e) => return bad_request(&e),
            }
        };
        // The upstream gets exactly the target the route was chosen for.
        if req.uri().path_and_query().map(|p| p.as_str()) != Some(pq.as_str()) {
            match http::Uri::try_from(pq.as_str()) {
                Ok(u) => *req.uri_mut() = u,
                Err(_) => return bad_request(&"the request target is not a valid URI"),
            }
        }
        let Some(route) = route else {
            // An address nothing is served at (a machine never made, or decommissioned): say so plainly.
            return html(
                StatusCode::NOT_FOUND,
                pages::plain(
                    "No such machine",
                    "Nothing is served at this address. If you were given this link, the machine behind it may have been removed; ask whoever sent it.",
                ),
            );
        };
        let now = self.clock.now();
        let cookie = get_cookie(req.headers(), SESSION_COOKIE);
        let had_cookie = cookie.is_some();
        let session = match cookie.map(|c| self.sessions.lookup(c, now)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return internal(&e),
            None => None,
        };
        let mut session = match (&route.policy, session) {
            (Policy::Public, s) => s,
            (_, None) => return self.unauthenticated(&req, &pq, had_cookie),
            (_, Some(s)) => Some(s),
        };
        // Every route that will carry this session's identity checks the token's freshness, public ones too:
        // the refresh is where the proxy learns that Forge revoked the grant or deleted the account, and without
        // it a public route went on announcing that person to its backend until the session's own timeout.
        if let Some(s) = session.clone() {
            if !self.vault.is_fresh(&s.token_key, now) {
                if let Some(p) = self.provider(&s.user.provider) {
                    let end_sessions = || self.sessions.revoke_user(s.user.id, false).map(drop);
                    match self
                        .vault
                        .ensure_fresh(&p, &s.user.external_id, now, end_sessions)
                        .await
                    {
                        Ok(None) => {}
                        Ok(Some(id_token)) => {
                            match self.refresh_identity(&p, &s.user, &id_token, now).await {
                                // The groups and login may have changed: this request already goes by the new.
                                Ok(()) => match cookie.map(|c| self.sessions.lookup(c, now)) {
                                    Some(Ok(Some(fresh))) => session = Some(fresh),
                                    Some(Err(e)) => return internal(&e),
                                    _ if route.policy != Policy::Public => {
                                        return self.unauthenticated(&req, &pq, true)
                                    }
                                    _ => session = None,
                                },
                                Err(e) => tracing::warn!(code = e.code(), error = %e,
                                    "the refreshed id_token was not usable; groups left as they were"),
                            }
                        }
                        Err(ProxyError::ReloginRequired) => {
                            if route.policy != Policy::Public {
                                return self.unauthenticated(&req, &pq, true);
                            }
                            // A public page is served anyway, to nobody in particular.
                            session = None;
                        }
                        Err(e) => {
                            tracing::warn!(code = e.code(), error = %e, "token refresh failed; continuing")
                        }
                    }
                }
            }
        }
        let mut verdict = Verdict::Admitted;
        if let Some(s) = &session {
            match self.verdict(&route, s).await {
                Ok(Verdict::Refused(what)) => {
                    return html(
                        StatusCode::FORBIDDEN,
                        pages::forbidden(s.user.display_name(), what),
                    )
                }
                Ok(v) => verdict = v,
                Err(e) => return internal(&e),
            }
        }
        // What a WebSocket tunnel this request may open is checked against while it lasts (`crate::tunnel`);
        // built only for a request that asks to upgrade.
        let grant = req.headers().contains_key(UPGRADE).then(|| {
            let cookie = session
                .as_ref()
                .and(get_cookie(req.headers(), SESSION_COOKIE))
                .map(str::to_owned);
            crate::tunnel::Grant::new(host.clone(), path, &route, cookie)
        });
        self.forward(
            req,
            &route,
            session.as_deref().map(|s| (s, verdict)),
            client,
            host.as_deref(),
            grant,
        )
        .await
    }

    /// The route's policy applied to a signed-in session (see [`Verdict`]). The one decision, for a request and for an open tunnel (`crate::tunnel`). An admin
    /// check that passes is remembered on the session; one that fails ends the session's earlier admin grants.
    pub(crate) async fn verdict(&self, route: &Route, s: &Session) -> Result<Verdict, ProxyError> {
        match &route.policy {
            Policy::Owner
                if self.owner_allowed(&s.user).await.unwrap_or_else(|e| {
                    tracing::warn!(code = e.code(), error = %e, "owner slot unreadable; admitting admins only");
                    false
                }) =>
            {
                Ok(Verdict::Owner)
            }
            Policy::Admin | Policy::Owner => {
                let list = self.admin_allowlist().await?;
                if self.admin_allowed(&list, &s.user, &s.claims)? {
                    if !s.admin_granted {
                        self.sessions.mark_admin_granted(&s.id_hash)?;
                    }
                    return Ok(Verdict::Admitted);
                }
                if s.admin_granted {
                    self.sessions.revoke_user(s.user.id, true)?;
                }
                Ok(Verdict::Refused(if route.policy == Policy::Owner {
                    "this machine"
                } else {
                    "the administration pages"
                }))
            }
            Policy::Claim(rule) if !rule.matches_any(s.claims.iter()) => {
                Ok(Verdict::Refused("this page"))
            }
            _ => Ok(Verdict::Admitted),
        }
    }

    async fn inject(
        &self,
        h: &mut HeaderMap,
        route: &Route,
        s: &Session,
        verdict: Verdict,
        now: u64,
    ) -> Result<(), ProxyError> {
        let invalid = || ProxyError::Invalid("identity not header-safe".into());
        let v = |s: &str| HeaderValue::from_str(s).map_err(|_| invalid());
        let id = s.identity.as_deref().ok_or_else(invalid)?;
        h.insert(HERO_USER, id.user.clone());
        h.insert(HERO_PROVIDER, id.provider.clone());
        if let Some(login) = &id.login {
            h.insert(HERO_LOGIN, login.clone());
        }
        h.insert(HERO_EXTERNAL_ID, id.external_id.clone());
        h.insert(HERO_CLAIMS, s.claims_header.clone());
        // The stack's convention: the context is the signed-in user's integer id from their record.
        if let Some(c) = &id.context {
            h.insert(HERO_CONTEXT, c.clone());
        }
        let ttl = self.cfg.assertion_ttl_secs;
        let assertion = {
            let mut cache = s.assertions.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&route.id) {
                Some((val, exp)) if *exp > now + ttl / 5 => val.clone(),
                _ => {
                    let payload = AssertionPayload {
                        iss: ASSERTION_ISSUER.into(),
                        // Bound to this route: no other backend can replay it (hero_identity checks `aud`).
                        aud: route.id.clone(),
                        sub: s.user.username.clone(),
                        ctx: s.user.context.map(|c| c.to_string()),
                        claims: s.claims.as_ref().clone(),
                        prv: s.user.provider.clone(),
                        lgn: s.user.forge_username.clone(),
                        xid: s.user.external_id.clone(),
                        iat: now,
                        exp: now + ttl,
                    };
                    let val = v(&self.signer.sign(&payload))?;
                    cache.insert(route.id.clone(), (val.clone(), now + ttl));
                    val
                }
            }
        };
        h.insert(HERO_ASSERTION, assertion);
        // Only a Forge token is passed as `X-Hero-Forge-Token`: a user signed in through another provider has that
        // provider's access token in the vault, which a backend would send to Forge (and should never see).
        if route.pass_token
            && s.user.provider == self.cfg.admin_provider
            && verdict.token_may_reach(route)
        {
            if let Some(tok) = self
                .vault
                .access_token(&s.user.provider, &s.user.external_id)
                .await?
            {
                let mut val = v(tok.expose())?;
                val.set_sensitive(true);
                h.insert(HERO_FORGE_TOKEN, val);
            }
        }
        Ok(())
    }

    async fn forward(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        route: &Route,
        session: Option<(&Session, Verdict)>,
        client: &Client,
        host: Option<&str>,
        grant: Option<crate::tunnel::Grant>,
    ) -> Response<ProxyBody> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (mut parts, body) = req.into_parts();
        let h = &mut parts.headers;
        // Room for the forwarding and identity headers added below, in one growth instead of several.
        h.reserve(10);
        // WebSocket is opened with GET only (RFC 6455 §4.1); any other method is a plain request.
        let upgrade = remove_hop_by_hop(h).filter(|_| parts.method == Method::GET);
        strip_reserved(h);
        set_forwarded(
            h,
            &client.peer_addr,
            &self.cfg.trusted_proxies,
            &self.cfg.public_scheme,
            host,
        );
        remove_session_cookie(h);
        // The backend sees the host the route was chosen for, spelled one way.
        if let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
            h.insert(HOST, v);
        }
        if let Some((s, verdict)) = session {
            if let Err(e) = self.inject(h, route, s, verdict, self.clock.now()).await {
                return internal(&e);
            }
        }
        if let Some(u) = &upgrade {
            h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(UPGRADE, u.clone());
        }
        // The one answer a backend that really speaks WebSocket gives (see `headers::websocket_accept`).
        let accept = upgrade
            .as_ref()
            .and(h.get(SEC_WEBSOCKET_KEY))
            .and_then(crate::headers::websocket_accept);
        parts.version = http::Version::HTTP_11;
        let timeout = std::time::Duration::from_secs(self.cfg.upstream_timeout_secs);
        let mut resp = match route
            .upstream
            .send(
                Request::from_parts(parts, body),
                session.map(|(s, _)| s.user.id),
                timeout,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return upstream_failed(&e, route),
        };
        // Before anything looks at the status: a 101 is sanitized like any other response (see the function).
        let switched_to = crate::headers::sanitize_response(resp.headers_mut());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // A switch nobody asked for (no upgrade, so no grant), to another protocol than the one allowed, or
            // without the WebSocket handshake's answer to the client's key, is never piped.
            let handshake_done =
                accept.is_some() && resp.headers().get(SEC_WEBSOCKET_ACCEPT) == accept.as_ref();
            let (Some(switched_to), Some(grant)) = (
                switched_to.filter(|_| upgrade.is_some() && handshake_done),
                grant,
            ) else {
                tracing::warn!(upstream = %route.upstream.describe(),
                    "upstream switched protocols unasked or without a WebSocket handshake; refused");
                return html(
                    StatusCode::BAD_GATEWAY,
                    pages::plain(
                        "Bad gateway",
                        "The service behind this address answered in a way the proxy does not pass on.",
                    ),
                );
            };
            let h = resp.headers_mut();
            h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(UPGRADE, switched_to);
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            crate::tunnel::open(self.clone(), grant, client_upgrade, upstream_upgrade);
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, full(Bytes::new()));
        }
        resp
    }
}

/// The login cookie's `Set-Cookie` value holding `entries` (sealed sign-ins; 0 s: it goes).
fn login_cookie(entries: &str, max_age: u64) -> String {
    format!("{LOGIN_COOKIE}={entries}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax")
}

/// The callback's `error` parameter as it may go into the log: an RFC 6749 §4.1.2.1 code (`access_denied`, …) as
/// is, anything else as `(malformed)`. Why: anyone can start a sign-in of their own and send its callback any
/// `error` text, which would otherwise reach the log verbatim — line breaks forging entries included.
fn oauth_error_code(raw: &str) -> &str {
    if !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        raw
    } else {
        "(malformed)"
    }
}
