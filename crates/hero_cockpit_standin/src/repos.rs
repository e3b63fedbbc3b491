//! "My Forge repositories": `GET <forge>/api/v1/user/repos` with the user's own token. The seed
//! design of the identity contract: the token hero_proxy passes through (`X-Hero-Forge-Token`,
//! only on `pass_token` routes) first, else a token the user stored (`cockpit/USER_FORGE_TOKEN`);
//! the page says which one was used. Tokens are never logged or shown.

use serde::{Deserialize, Serialize};

use crate::{Cockpit, USER_FORGE_TOKEN_SLOT};

/// Which token listed the repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `X-Hero-Forge-Token`, passed through by hero_proxy.
    PassedThrough,
    /// The user's stored token, `cockpit/USER_FORGE_TOKEN`.
    Stored,
    /// Neither is available.
    None,
}

impl TokenSource {
    /// How the page says it.
    pub fn describe(self) -> &'static str {
        match self {
            TokenSource::PassedThrough => "your sign-in token, passed through by hero_proxy",
            TokenSource::Stored => "the token you stored (cockpit/USER_FORGE_TOKEN)",
            TokenSource::None => "no token: sign-in passed none and none is stored",
        }
    }
}

/// One repository as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    pub full_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub html_url: String,
}

/// The outcome of listing.
#[derive(Debug, Clone, Serialize)]
pub struct RepoList {
    pub token: TokenSource,
    pub repos: Vec<Repo>,
    /// A plain reason when listing failed (no internals: status only).
    pub error: Option<String>,
}

/// The token to use and where it came from. The stored fallback is the VM owner's token, so it serves the owner
/// alone (`cockpit/FORGE_OWNER`, a Forge identity): on a route without pass-through, or with an empty vault, any
/// other signed-in user (an admin, or anyone on a route that is not owner-only) saw the owner's private repositories.
async fn choose_token(
    c: &Cockpit,
    id: &hero_identity::Identity,
    headers: &http::HeaderMap,
) -> (TokenSource, Option<String>) {
    if let Some(t) = hero_identity::forge_token(headers).filter(|t| !t.is_empty()) {
        return (TokenSource::PassedThrough, Some(t.to_owned()));
    }
    if let Some(store) = &c.secrets {
        let owner = store
            .get(hero_secrets::slots::COCKPIT_FORGE_OWNER)
            .await
            .ok()
            .flatten();
        let is_owner = id.provider == "forge"
            && owner.is_some_and(|o| o.expose().trim().eq_ignore_ascii_case(&id.login));
        if !is_owner {
            return (TokenSource::None, None);
        }
        match store.get(USER_FORGE_TOKEN_SLOT).await {
            Ok(Some(v)) if !v.expose().trim().is_empty() => {
                return (TokenSource::Stored, Some(v.expose().trim().to_owned()))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read {USER_FORGE_TOKEN_SLOT}"),
        }
    }
    (TokenSource::None, None)
}

/// Lists the signed-in user's repositories (first page of 50, alphabetical).
pub async fn my_repositories(
    c: &Cockpit,
    id: &hero_identity::Identity,
    headers: &http::HeaderMap,
) -> RepoList {
    let (token, secret) = choose_token(c, id, headers).await;
    let Some(secret) = secret else {
        return RepoList {
            token,
            repos: Vec::new(),
            error: None,
        };
    };
    let url = format!("{}/api/v1/user/repos?limit=50", c.forge_url);
    // `Bearer` carries both an OAuth access token (JWT) and a personal access token.
    let outcome = c
        .http
        .get(&url)
        .header("Authorization", format!("Bearer {secret}"))
        .send()
        .await;
    let (repos, error) = match outcome {
        Ok(r) if r.status() == reqwest::StatusCode::OK => match r.json::<Vec<Repo>>().await {
            Ok(v) => (v, None),
            Err(e) => {
                tracing::warn!(error = %e, "Forge repository list did not parse");
                (
                    Vec::new(),
                    Some("Forge answered with something unexpected".into()),
                )
            }
        },
        Ok(r) => (
            Vec::new(),
            Some(format!(
                "Forge refused to list them (HTTP {})",
                r.status().as_u16()
            )),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "Forge unreachable");
            (Vec::new(), Some("Forge could not be reached".into()))
        }
    };
    RepoList {
        token,
        repos,
        error,
    }
}
