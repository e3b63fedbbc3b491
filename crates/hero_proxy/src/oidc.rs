//! OAuth2 / OIDC client side: discovery, authorization-code + PKCE-S256, token exchange and refresh, id_token
//! validation (JWKS `kid`, issuer verbatim from discovery, `aud` string or array, nonce, expiry).
//!
//! Forgejo facts this follows (shared/reference/forgejo-api.md §2): the issuer may or may not carry a trailing slash,
//! so it is compared verbatim with discovery; `token_type` may be `bearer`; there may be no `scope` field; any 400
//! from the token endpoint means "sign in again"; a grant stores the exact scope string, so it must never change.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hero_secrets::SecretValue;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use zeroize::Zeroizing;

use crate::error::{ProxyError, Result};

/// The one scope string sent to Forge, always byte-for-byte the same: Forgejo refuses a different string for an
/// existing grant (`a grant exists with different scope`), and an API scope must be present or the token gets `all`.
pub const FORGE_SCOPE: &str = "openid profile email groups read:user write:repository write:issue";

/// Allowed clock skew for id_token `exp`.
const EXP_LEEWAY_SECS: u64 = 30;

/// What discovery tells us.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// The issuer, verbatim (trailing slash or not).
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// JWKS.
    pub jwks_uri: String,
    /// Userinfo (unused for login; the id_token carries the claims).
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// Tokens from the token endpoint. Values are zeroized on drop and never printed.
pub struct Tokens {
    /// Access token (opaque to us: never parsed).
    pub access_token: Zeroizing<String>,
    /// Refresh token, if issued.
    pub refresh_token: Option<Zeroizing<String>>,
    /// id_token, if issued.
    pub id_token: Option<String>,
    /// Lifetime of the access token in seconds (3600 if absent).
    pub expires_in: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { .. }")
    }
}

#[derive(Deserialize)]
struct RawTokens {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
}

/// Validated id_token claims we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClaims {
    /// Provider subject (Forgejo: numeric string).
    pub sub: String,
    /// Login name.
    pub preferred_username: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Forge `groups` (`org`, `org:team`).
    pub groups: Vec<String>,
}

/// PKCE pair.
pub struct Pkce {
    /// Sent at the token endpoint.
    pub verifier: Zeroizing<String>,
    /// `BASE64URL(SHA256(verifier))`, sent at authorize.
    pub challenge: String,
}

/// A fresh S256 PKCE pair (43-character verifier from 32 random bytes).
pub fn pkce() -> Pkce {
    let verifier = Zeroizing::new(random_token(32));
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// URL-safe random string from `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// A configured provider with its cached discovery and JWKS.
pub struct Provider {
    /// Short id.
    pub id: String,
    /// Issuer URL as configured (discovery base).
    pub issuer_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret (confidential clients).
    pub client_secret: Option<SecretValue>,
    /// Constant scope string.
    pub scope: String,
    http: reqwest::Client,
    discovery: RwLock<Option<Discovery>>,
    /// Held while discovery is fetched (one fetch at a time); the last failure and when it happened.
    discovery_fetch: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
    jwks: RwLock<Option<JwkSet>>,
}

/// After discovery failed, callers within this long get that failure again without a new fetch. Why:
/// `/oauth/login` is unauthenticated and needs discovery, so with the provider down every request to it started
/// an outbound fetch of up to the client's 15 s timeout — a flood of logins became a flood at the provider and a
/// pile of waiting tasks here.
pub const DISCOVERY_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest answer read from a provider (discovery, JWKS, tokens: a few kilobytes each). More is a broken or
/// hostile provider, refused before it fills memory.
const MAX_PROVIDER_ANSWER: usize = 1024 * 1024;

/// `resp`'s JSON body, read with [`MAX_PROVIDER_ANSWER`] as the cap.
async fn capped_json<T: serde::de::DeserializeOwned>(
    mut resp: reqwest::Response,
    what: &str,
) -> Result<T> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_PROVIDER_ANSWER as u64)
    {
        return Err(provider_err(what, "answer too long"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| provider_err(what, e))? {
        if body.len() + chunk.len() > MAX_PROVIDER_ANSWER {
            return Err(provider_err(what, "answer too long"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| provider_err(what, e))
}

fn provider_err(what: &str, e: impl std::fmt::Display) -> ProxyError {
    ProxyError::Provider(format!("{what}: {e}"))
}

impl Provider {
    /// A provider; nothing is fetched until first use.
    pub fn new(
        id: &str,
        issuer_url: &str,
        client_id: &str,
        client_secret: Option<SecretValue>,
        scope: &str,
    ) -> Result<Provider> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(ProxyError::Invalid(format!(
                "provider id {id:?} must match [a-z0-9_-]+"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| provider_err("http client", e))?;
        Ok(Provider {
            id: id.to_owned(),
            issuer_url: issuer_url.to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            scope: scope.to_owned(),
            http,
            discovery: RwLock::new(None),
            discovery_fetch: tokio::sync::Mutex::new(None),
            jwks: RwLock::new(None),
        })
    }

    /// Discovery document, fetched once (one fetch at a time; a failure is answered again for
    /// [`DISCOVERY_RETRY`] without a new fetch).
    pub async fn discovery(&self) -> Result<Discovery> {
        if let Some(d) = self.discovery.read().await.as_ref() {
            return Ok(d.clone());
        }
        let mut last_failure = self.discovery_fetch.lock().await;
        if let Some(d) = self.discovery.read().await.as_ref() {
            return Ok(d.clone());
        }
        if let Some((at, why)) = last_failure.as_ref() {
            if at.elapsed() < DISCOVERY_RETRY {
                return Err(ProxyError::Provider(why.clone()));
            }
        }
        match self.fetch_discovery().await {
            Ok(d) => {
                *self.discovery.write().await = Some(d.clone());
                *last_failure = None;
                Ok(d)
            }
            Err(e) => {
                *last_failure = Some((std::time::Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    async fn fetch_discovery(&self) -> Result<Discovery> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer_url.trim_end_matches('/')
        );
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| provider_err("discovery", e))?;
        if !resp.status().is_success() {
            return Err(provider_err("discovery", resp.status()));
        }
        capped_json(resp, "discovery JSON").await
    }

    /// The authorize URL for one login attempt.
    /// `login_hint` (optional, OIDC Core §3.1.2.1) pre-selects the account at the provider.
    pub async fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
        login_hint: Option<&str>,
    ) -> Result<String> {
        let d = self.discovery().await?;
        let mut url = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| provider_err("authorization_endpoint", e))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.scope)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(h) = login_hint.filter(|h| h.len() <= 128) {
            url.query_pairs_mut().append_pair("login_hint", h);
        }
        Ok(url.into())
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Tokens> {
        let d = self.discovery().await?;
        let mut body: Vec<(&str, &str)> = form.to_vec();
        body.push(("client_id", &self.client_id));
        if let Some(s) = &self.client_secret {
            body.push(("client_secret", s.expose()));
        }
        let resp = self
            .http
            .post(&d.token_endpoint)
            .form(&body)
            .send()
            .await
            .map_err(|e| provider_err("token endpoint", e))?;
        let status = resp.status();
        if status.is_client_error() {
            // Forgejo answers unauthorized_client where RFC 6749 says invalid_grant: any 4xx means "log in again".
            return Err(ProxyError::ReloginRequired);
        }
        if !status.is_success() {
            return Err(provider_err("token endpoint", status));
        }
        let raw: RawTokens = capped_json(resp, "token JSON").await?;
        if let Some(t) = &raw.token_type {
            if !t.eq_ignore_ascii_case("bearer") {
                return Err(ProxyError::Provider(format!("unexpected token_type {t:?}")));
            }
        }
        Ok(Tokens {
            access_token: Zeroizing::new(raw.access_token),
            refresh_token: raw.refresh_token.map(Zeroizing::new),
            id_token: raw.id_token,
            expires_in: raw.expires_in.unwrap_or(3600),
        })
    }

    /// Exchanges an authorization code (with the PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
        .map_err(|e| match e {
            ProxyError::ReloginRequired => {
                ProxyError::LoginRejected("the provider refused the authorization code")
            }
            other => other,
        })
    }

    /// Uses a refresh token. `Err(ReloginRequired)` on any 4xx (rotation: the old refresh token is now dead).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn jwks(&self, force: bool) -> Result<JwkSet> {
        if !force {
            if let Some(j) = self.jwks.read().await.as_ref() {
                return Ok(j.clone());
            }
        }
        let d = self.discovery().await?;
        let resp = self
            .http
            .get(&d.jwks_uri)
            .send()
            .await
            .map_err(|e| provider_err("jwks", e))?;
        let set: JwkSet = capped_json(resp, "jwks JSON").await?;
        *self.jwks.write().await = Some(set.clone());
        Ok(set)
    }

    /// Validates an id_token: signature by the JWKS key named by `kid` (refetching the JWKS once for an unknown
    /// kid, to follow key rotation), asymmetric algorithms only, `iss` equal to discovery's verbatim, `aud` contains
    /// our client id, `nonce` equal to ours, `exp` in the future.
    ///
    /// `nonce` is `None` for the id_token of a refresh, which answers no authorization request (OIDC Core §12.2);
    /// the caller then checks that `sub` is the signed-in identity's.
    pub async fn validate_id_token(
        &self,
        token: &str,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<IdClaims> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ProxyError::LoginRejected("id_token header"))?;
        let asymmetric = matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        );
        if !asymmetric {
            return Err(ProxyError::LoginRejected("id_token algorithm not allowed"));
        }
        let find = |set: &JwkSet| match &header.kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let jwk = match find(&self.jwks(false).await?) {
            Some(j) => j,
            None => find(&self.jwks(true).await?)
                .ok_or(ProxyError::LoginRejected("id_token kid not in JWKS"))?,
        };
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| ProxyError::LoginRejected("unusable JWKS key"))?;
        let mut v = Validation::new(header.alg);
        // Time and audience are checked below with our clock and both aud shapes.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<HashMap<String, serde_json::Value>>(token, &key, &v)
            .map_err(|_| ProxyError::LoginRejected("id_token signature"))?;
        let c = data.claims;
        let d = self.discovery().await?;
        if c.get("iss").and_then(|v| v.as_str()) != Some(d.issuer.as_str()) {
            return Err(ProxyError::LoginRejected(
                "id_token issuer differs from discovery",
            ));
        }
        let aud_ok = match c.get("aud") {
            Some(serde_json::Value::String(s)) => *s == self.client_id,
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .any(|x| x.as_str() == Some(self.client_id.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(ProxyError::LoginRejected("id_token audience"));
        }
        if let Some(nonce) = nonce {
            if c.get("nonce").and_then(|v| v.as_str()) != Some(nonce) {
                return Err(ProxyError::LoginRejected("id_token nonce"));
            }
        }
        let exp = c
            .get("exp")
            .and_then(|v| v.as_u64())
            .ok_or(ProxyError::LoginRejected("id_token exp"))?;
        if exp + EXP_LEEWAY_SECS <= now {
            return Err(ProxyError::LoginRejected("id_token expired"));
        }
        let sub = c
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(ProxyError::LoginRejected("id_token sub"))?;
        let s = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let groups = c
            .get("groups")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(IdClaims {
            sub: sub.to_owned(),
            preferred_username: s("preferred_username"),
            name: s("name"),
            email: s("email"),
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_one_constant_string() {
        assert_eq!(
            FORGE_SCOPE,
            "openid profile email groups read:user write:repository write:issue"
        );
        // An API scope is present, so Forgejo does not turn the token into `all`.
        assert!(FORGE_SCOPE.split(' ').any(|s| s.contains(':')));
        assert!(FORGE_SCOPE.split(' ').any(|s| s == "openid"));
    }

    #[tokio::test]
    async fn authorize_url_uses_the_constant_scope_every_time() {
        // A stand-in discovery (no network) to observe the URL we build.
        let p = Provider::new("forge", "http://127.0.0.1:9", "cid", None, FORGE_SCOPE).unwrap();
        *p.discovery.write().await = Some(Discovery {
            issuer: "http://127.0.0.1:9/".into(),
            authorization_endpoint: "http://127.0.0.1:9/login/oauth/authorize".into(),
            token_endpoint: "http://127.0.0.1:9/login/oauth/access_token".into(),
            jwks_uri: "http://127.0.0.1:9/login/oauth/keys".into(),
            userinfo_endpoint: None,
        });
        let a = p
            .authorize_url("https://h/oauth/callback", "s1", "n1", "c1", None)
            .await
            .unwrap();
        let b = p
            .authorize_url("https://h/oauth/callback", "s2", "n2", "c2", Some("bob"))
            .await
            .unwrap();
        let scope = |u: &str| {
            url::Url::parse(u)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(scope(&a).as_deref(), Some(FORGE_SCOPE));
        assert_eq!(scope(&a), scope(&b));
        assert!(a.contains("code_challenge_method=S256"));
    }

    #[test]
    fn pkce_s256() {
        let p = pkce();
        assert_eq!(p.verifier.len(), 43);
        assert_eq!(
            p.challenge,
            B64.encode(Sha256::digest(p.verifier.as_bytes()))
        );
        assert!(Provider::new("Forge!", "x", "y", None, FORGE_SCOPE).is_err());
    }
}
