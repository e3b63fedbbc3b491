//! JSON shapes of the Forgejo API (swagger `User`, `AccessToken`, `OAuth2Application`), built the
//! way Forgejo's `services/convert` builds them, including what is hidden from whom.

use serde::Serialize;

use crate::db::{TokenRow, UserRow};
use crate::oauth::store::AppRow;
use crate::Config;

/// RFC 3339 in UTC with second precision, like Go's `time.Time` JSON for Forgejo timestamps.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Go's zero `time.Time`, what Forgejo prints for fields it hides.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The swagger `User` definition, field order as Forgejo emits it.
#[derive(Debug, Clone, Serialize)]
pub struct ApiUser {
    pub id: i64,
    pub login: String,
    pub login_name: String,
    pub source_id: i64,
    pub full_name: String,
    pub email: String,
    pub avatar_url: String,
    pub html_url: String,
    pub language: String,
    pub is_admin: bool,
    pub last_login: String,
    pub created: String,
    pub restricted: bool,
    pub active: bool,
    pub prohibit_login: bool,
    pub location: String,
    pub pronouns: String,
    pub website: String,
    pub description: String,
    pub visibility: String,
    pub followers_count: i64,
    pub following_count: i64,
    pub starred_repos_count: i64,
    pub username: String,
}

/// `convert.ToUser(user, doer)`: anonymous callers get the `noreply` placeholder e-mail; only the
/// user themself and site admins see `is_admin`, `login_name`, `last_login`, `active`, ….
pub fn user_json(cfg: &Config, u: &UserRow, doer: Option<&UserRow>) -> ApiUser {
    let signed = doer.is_some();
    let authed = doer.is_some_and(|d| d.is_admin || d.id == u.id);
    let host = url::Url::parse(&cfg.external_url)
        .ok()
        .and_then(|x| x.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".into());
    let email = if signed {
        u.email.clone()
    } else {
        format!("{}@noreply.{host}", u.name.to_lowercase())
    };
    ApiUser {
        id: u.id,
        login: u.name.clone(),
        login_name: if authed {
            u.login_name.clone()
        } else {
            String::new()
        },
        source_id: if authed { u.source_id } else { 0 },
        full_name: u.full_name.clone(),
        email,
        avatar_url: format!("{}/assets/img/avatar_default.png", cfg.external_url),
        html_url: format!("{}/{}", cfg.external_url, u.name),
        language: if authed {
            u.language.clone()
        } else {
            String::new()
        },
        is_admin: authed && u.is_admin,
        last_login: if authed {
            rfc3339(u.last_login_unix)
        } else {
            GO_ZERO_TIME.to_string()
        },
        created: rfc3339(u.created_unix),
        restricted: u.restricted,
        active: authed && u.is_active,
        prohibit_login: authed && u.prohibit_login,
        location: u.location.clone(),
        pronouns: u.pronouns.clone(),
        website: u.website.clone(),
        description: u.description.clone(),
        visibility: u.visibility.clone(),
        followers_count: 0,
        following_count: 0,
        starred_repos_count: 0,
        username: u.name.clone(),
    }
}

/// The swagger `AccessToken` definition. `sha1` is the secret on creation and `""` in listings.
#[derive(Debug, Clone, Serialize)]
pub struct ApiAccessToken {
    pub id: i64,
    pub name: String,
    pub sha1: String,
    pub token_last_eight: String,
    pub scopes: Vec<String>,
}

pub fn token_json(t: &TokenRow, secret: Option<&str>) -> ApiAccessToken {
    ApiAccessToken {
        id: t.id,
        name: t.name.clone(),
        sha1: secret.unwrap_or_default().to_string(),
        token_last_eight: t.token_last_eight.clone(),
        scopes: t
            .scope
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// The swagger `OAuth2Application` definition. `client_secret` only on creation.
#[derive(Debug, Clone, Serialize)]
pub struct ApiOAuth2App {
    pub id: i64,
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub confidential_client: bool,
    pub created: String,
}

pub fn oauth_app_json(a: &AppRow, secret: Option<&str>) -> ApiOAuth2App {
    ApiOAuth2App {
        id: a.id,
        name: a.name.clone(),
        client_id: a.client_id.clone(),
        client_secret: secret.unwrap_or_default().to_string(),
        redirect_uris: a.redirect_uris.clone(),
        confidential_client: a.confidential,
        created: rfc3339(a.created_unix),
    }
}
