//! Forgejo over HTTP, following Forgejo v11/v12 behaviour (checked against the dev Forge and, via
//! Prism, the Forgejo swagger):
//! admin calls use the admin PAT (`Authorization: token …`), token minting uses Basic auth,
//! redirects are not followed (a 307 means "renamed"), and only connection errors and 5xx are
//! retried, with exponential backoff and jitter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hero_os_tfgrid_deployer_backends::peer_body;
use hero_secrets::{SecretStore, SecretValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{ConflictReason, ForgeApi, ForgeError, ForgeToken, ForgeUser, NewForgeUser};

mod apps;
use crate::clock::Random;

/// Secret slot of the Forge admin token.
pub const ADMIN_TOKEN_SLOT: &str = hero_secrets::slots::FORGE_ADMIN_TOKEN;

/// Where the admin token comes from. Read on every call, so `secret set` applies without restart.
#[derive(Clone)]
pub enum AdminTokenSource {
    Slot(Arc<dyn SecretStore>),
    File(PathBuf),
}

impl AdminTokenSource {
    async fn get(&self) -> Result<SecretValue, ForgeError> {
        let value = match self {
            AdminTokenSource::Slot(store) => {
                store
                    .get(ADMIN_TOKEN_SLOT)
                    .await
                    .map_err(|e| ForgeError::Protocol {
                        status: 0,
                        message: format!("cannot read the admin token: {e}"),
                    })?
            }
            AdminTokenSource::File(path) => match tokio::fs::read_to_string(path).await {
                Ok(s) => Some(SecretValue::new(s.trim().to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(ForgeError::Protocol {
                        status: 0,
                        message: format!("cannot read admin token file {}: {e}", path.display()),
                    })
                }
            },
        };
        value
            .filter(|v| !v.expose().is_empty())
            .ok_or_else(|| ForgeError::AdminTokenMissing {
                file: match self {
                    AdminTokenSource::File(p) => Some(p.clone()),
                    AdminTokenSource::Slot(_) => None,
                },
            })
    }
}

/// Retry policy for idempotent trouble: connection errors and 5xx.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

pub struct HttpForge {
    base: String,
    http: reqwest::Client,
    admin_token: AdminTokenSource,
    retry: RetryPolicy,
    random: Arc<dyn Random>,
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TokenBody {
    id: i64,
    name: String,
    sha1: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// The longest success answer accepted from Forge (more is a broken or hostile server, [`peer_body`]).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct VersionBody {
    version: String,
}

enum Auth<'a> {
    Admin,
    /// The admin token when one is configured, else anonymous (Forgejo serves `/version` to
    /// anyone, but its spec declares auth on every operation).
    AdminIfAvailable,
    Basic(&'a str, &'a SecretValue),
}

impl HttpForge {
    pub fn new(
        base_url: &str,
        timeout: Duration,
        admin_token: AdminTokenSource,
        retry: RetryPolicy,
        random: Arc<dyn Random>,
    ) -> Result<HttpForge, ForgeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "hero_os_tfgrid_deployer/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| ForgeError::Unreachable {
                url: base_url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(HttpForge {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            admin_token,
            retry,
            random,
        })
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    /// Sends a request built by `build`, retrying connection errors and 5xx.
    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<serde_json::Value>,
    ) -> Result<Response, ForgeError> {
        let url = self.api(path);
        let admin = match auth {
            Auth::Admin => Some(self.admin_token.get().await?),
            Auth::AdminIfAvailable => self.admin_token.get().await.ok(),
            _ => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request: RequestBuilder = self.http.request(method.clone(), &url);
            request = match (&auth, &admin) {
                (Auth::Admin | Auth::AdminIfAvailable, Some(token)) => {
                    request.header("Authorization", format!("token {}", token.expose()))
                }
                (Auth::Basic(user, password), _) => {
                    let raw = format!("{user}:{}", password.expose());
                    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                    request.header("Authorization", format!("Basic {encoded}"))
                }
                (Auth::Admin | Auth::AdminIfAvailable, None) => request,
            };
            if let Some(body) = &body {
                request = request.json(body);
            }
            let outcome = request.send().await;
            let retryable = match &outcome {
                Ok(r) => r.status().is_server_error(),
                Err(e) => e.is_connect() || e.is_timeout(),
            };
            if let Ok(r) = &outcome {
                flag_spec_violations(path, r);
            }
            if !retryable || attempt >= self.retry.attempts {
                return match outcome {
                    Ok(r) if r.status().is_server_error() => Err(ForgeError::ServerError {
                        url: self.base.clone(),
                        status: r.status().as_u16(),
                        attempts: attempt,
                    }),
                    Ok(r) => Ok(r),
                    Err(e) => Err(ForgeError::Unreachable {
                        url: self.base.clone(),
                        reason: describe(&e),
                    }),
                };
            }
            let delay = self.backoff(attempt);
            tracing::warn!(
                path,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "Forge request failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Exponential backoff with full jitter: uniform in [d/2, d].
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.retry.max_delay);
        let ms = exp.as_millis().max(2) as u32;
        Duration::from_millis(u64::from(ms / 2 + self.random.below(ms / 2 + 1)))
    }
}

/// A validating proxy in front of Forge (Prism in our tests, possibly a gateway in production)
/// reports spec violations in `sl-violations` or answers `application/problem+json`, which Forgejo
/// itself never does. Say so loudly: it means our client and the Forgejo contract disagree.
fn flag_spec_violations(path: &str, response: &Response) {
    if let Some(v) = response.headers().get("sl-violations") {
        tracing::warn!(path, violations = ?v, "Forge exchange violates the Forgejo API spec");
    }
    let problem = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if problem {
        tracing::warn!(
            path,
            status = response.status().as_u16(),
            "Forge exchange violates the Forgejo API spec (a validating proxy answered application/problem+json)"
        );
    }
}

/// reqwest's Display omits the cause; walk the chain (never contains credentials).
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The error answer's message: Forgejo's `{"message": …}` when it sent one, else the start of the body, else the
/// status — as a short printable excerpt whichever it is ([`peer_body`]: it lands in job rows, the audit log and
/// the operator's terminal).
async fn message(response: Response) -> String {
    let status = response.status();
    let body = peer_body::error_body(response).await;
    let text = serde_json::from_slice::<ApiMessage>(&body)
        .map(|m| m.message)
        .ok()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let text = peer_body::excerpt(&text);
    if text.is_empty() {
        status.to_string()
    } else {
        text
    }
}

/// A success answer's JSON, read with a cap (Forge's answers here are one user or one token, a few kilobytes).
async fn decode<T: for<'de> Deserialize<'de>>(response: Response) -> Result<T, ForgeError> {
    let status = response.status().as_u16();
    let body = peer_body::read_capped(response, MAX_ANSWER)
        .await
        .map_err(|e| ForgeError::Protocol {
            status,
            message: e.to_string(),
        })?;
    serde_json::from_slice(&body).map_err(|e| ForgeError::Protocol {
        status,
        message: format!("unexpected body: {e}"),
    })
}

fn conflict_reason(message: &str) -> ConflictReason {
    let m = message.to_ascii_lowercase();
    if m.contains("user already exists") {
        ConflictReason::NameTaken
    } else if m.contains("e-mail already in use") || m.contains("email already in use") {
        ConflictReason::EmailTaken
    } else if m.contains("name is reserved") {
        ConflictReason::NameReserved
    } else if m.contains("pattern") {
        ConflictReason::NamePatternNotAllowed
    } else {
        ConflictReason::Other
    }
}

#[async_trait::async_trait]
impl ForgeApi for HttpForge {
    async fn version(&self) -> Result<String, ForgeError> {
        let response = self
            .send(Method::GET, "/version", Auth::AdminIfAvailable, None)
            .await?;
        match response.status() {
            StatusCode::OK => Ok(decode::<VersionBody>(response).await?.version),
            status => Err(ForgeError::Protocol {
                status: status.as_u16(),
                message: message(response).await,
            }),
        }
    }

    async fn user_exists(&self, username: &str) -> Result<Option<ForgeUser>, ForgeError> {
        let path = format!("/users/{username}");
        let response = self.send(Method::GET, &path, Auth::Admin, None).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(decode(response).await?)),
            StatusCode::NOT_FOUND => Ok(None),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(ForgeError::AdminTokenRejected {
                    status: s.as_u16(),
                    message: message(response).await,
                })
            }
            s if s.is_redirection() => Err(ForgeError::Protocol {
                status: s.as_u16(),
                message: format!(
                    "user {username} was renamed on Forge (Location: {})",
                    response
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                ),
            }),
            s => Err(ForgeError::Protocol {
                status: s.as_u16(),
                message: message(response).await,
            }),
        }
    }

    async fn create_user(&self, user: &NewForgeUser<'_>) -> Result<ForgeUser, ForgeError> {
        let body = json!({
            "username": user.username,
            "email": user.email,
            "full_name": user.full_name.unwrap_or(""),
            "password": user.password.expose(),
            "must_change_password": false,
            "send_notify": false,
            "visibility": "private",
        });
        let response = self
            .send(Method::POST, "/admin/users", Auth::Admin, Some(body))
            .await?;
        match response.status() {
            StatusCode::CREATED | StatusCode::OK => decode(response).await,
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(ForgeError::AdminTokenRejected {
                    status: s.as_u16(),
                    message: message(response).await,
                })
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                let message = message(response).await;
                match conflict_reason(&message) {
                    ConflictReason::Other => Err(ForgeError::Protocol {
                        status: 422,
                        message,
                    }),
                    reason => Err(ForgeError::Conflict { reason, message }),
                }
            }
            StatusCode::BAD_REQUEST => Err(ForgeError::PasswordRejected {
                message: message(response).await,
            }),
            s => Err(ForgeError::Protocol {
                status: s.as_u16(),
                message: message(response).await,
            }),
        }
    }

    async fn set_password(&self, username: &str, password: &SecretValue) -> Result<(), ForgeError> {
        let path = format!("/admin/users/{username}");
        let body = json!({ "password": password.expose(), "must_change_password": false });
        let response = self
            .send(Method::PATCH, &path, Auth::Admin, Some(body))
            .await?;
        match response.status() {
            StatusCode::OK => Ok(()),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(ForgeError::AdminTokenRejected {
                    status: s.as_u16(),
                    message: message(response).await,
                })
            }
            StatusCode::BAD_REQUEST => Err(ForgeError::PasswordRejected {
                message: message(response).await,
            }),
            s => Err(ForgeError::Protocol {
                status: s.as_u16(),
                message: message(response).await,
            }),
        }
    }

    async fn generate_token_for(
        &self,
        username: &str,
        password: &SecretValue,
        token_name: &str,
        scopes: &[String],
    ) -> Result<ForgeToken, ForgeError> {
        let path = format!("/users/{username}/tokens");
        let body = json!({ "name": token_name, "scopes": scopes });
        let response = self
            .send(
                Method::POST,
                &path,
                Auth::Basic(username, password),
                Some(body),
            )
            .await?;
        match response.status() {
            StatusCode::CREATED | StatusCode::OK => {
                let t: TokenBody = decode(response).await?;
                Ok(ForgeToken {
                    id: t.id,
                    name: t.name,
                    secret: SecretValue::new(t.sha1),
                    scopes: t.scopes,
                })
            }
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(ForgeError::UserCredentialsRejected {
                    status: s.as_u16(),
                    message: message(response).await,
                })
            }
            StatusCode::BAD_REQUEST => {
                let message = message(response).await;
                if message.contains("has been used already") {
                    Err(ForgeError::Conflict {
                        reason: ConflictReason::TokenNameUsed,
                        message,
                    })
                } else {
                    Err(ForgeError::Protocol {
                        status: 400,
                        message,
                    })
                }
            }
            s => Err(ForgeError::Protocol {
                status: s.as_u16(),
                message: message(response).await,
            }),
        }
    }

    async fn password_works(
        &self,
        username: &str,
        password: &SecretValue,
    ) -> Result<bool, ForgeError> {
        let response = self
            .send(Method::GET, "/user", Auth::Basic(username, password), None)
            .await?;
        match response.status() {
            StatusCode::OK => {
                // The caller Forge names must be the account asked about: a password that signs in as
                // someone else (a renamed account) does not make this one's work.
                let me: ForgeUser = decode(response).await?;
                Ok(me.login.eq_ignore_ascii_case(username))
            }
            StatusCode::UNAUTHORIZED => Ok(false),
            s => Err(ForgeError::Protocol {
                status: s.as_u16(),
                message: message(response).await,
            }),
        }
    }

    async fn delete_token_for(
        &self,
        username: &str,
        password: &SecretValue,
        token_name: &str,
    ) -> Result<bool, ForgeError> {
        let path = format!("/users/{username}/tokens/{token_name}");
        let response = self
            .send(Method::DELETE, &path, Auth::Basic(username, password), None)
            .await?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(ForgeError::UserCredentialsRejected {
                    status: s.as_u16(),
                    message: message(response).await,
                })
            }
            s => Err(ForgeError::Protocol {
                status: s.as_u16(),
                message: message(response).await,
            }),
        }
    }

    fn url(&self) -> &str {
        &self.base
    }

    fn apps(&self) -> Option<&dyn super::apps::ForgeApps> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// With `forge.admin_token_file` set, a missing or empty file is named as such: the advice to `secret set` the
    /// slot would change nothing, since the slot is not read then.
    #[tokio::test]
    async fn a_missing_or_empty_token_file_is_named_not_the_ignored_slot() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.token");
        std::fs::write(&empty, "  \n").unwrap();
        for path in [dir.path().join("absent.token"), empty] {
            let err = AdminTokenSource::File(path.clone())
                .get()
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&path.display().to_string())
                    && text.contains("forge.admin_token_file")
                    && !text.contains("secret set"),
                "{text}"
            );
            assert_eq!(err.code(), "FRG003_admin_token_missing");
        }
    }
}
