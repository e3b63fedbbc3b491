//! Operator commands of the binary (`seed-admin`, `add-member`, `add-oauth-app`) as library
//! functions, so they are testable and reusable. Secrets go to 0600 files, never to stdout/stderr.

use std::path::Path;

use crate::db::{Db, NewUser, UserPatch};
use crate::error::DbError;
use crate::rules;
use crate::scopes::Scope;
use crate::secrets;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid username: {0}")]
    Username(#[from] rules::UsernameError),
    #[error(
        "password too short (Forgejo's minimum is {} characters)",
        rules::MIN_PASSWORD_LEN
    )]
    PasswordTooShort,
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("invalid group {0:?}: expected org or org:team")]
    BadGroup(String),
    #[error("invalid redirect URI: {0}")]
    BadRedirect(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Result of `seed_admin`: the admin's name and whether it was created now.
#[derive(Debug, Clone)]
pub struct SeededAdmin {
    pub username: String,
    pub created: bool,
    pub token_name: String,
}

/// Creates (or reuses) a site admin and writes a freshly minted PAT with scope `all` to
/// `token_out` (0600). A password from `password_file` is set (also on an existing admin);
/// without one, a new admin gets a random password nobody knows (token-only admin).
pub fn seed_admin(
    data_dir: &Path,
    username: &str,
    token_out: &Path,
    password_file: Option<&Path>,
) -> Result<SeededAdmin, CliError> {
    // Seeding may use names the API refuses (e.g. `admin`, reserved for Forgejo's own admin),
    // so only the character rules apply.
    rules::check_username_binding(username)?;
    let password = match password_file {
        Some(p) => {
            let raw = std::fs::read_to_string(p).map_err(io_err(p))?;
            let pw = raw.trim_end_matches(['\r', '\n']).to_string();
            if rules::check_password(&pw).is_err() {
                return Err(CliError::PasswordTooShort);
            }
            Some(pw)
        }
        None => None,
    };
    let db = Db::open(data_dir)?;
    let (user, created) = match db.user_by_name(username)? {
        Some(u) => {
            let patch = UserPatch {
                admin: Some(true),
                active: Some(true),
                must_change_password: Some(false),
                password: password.as_deref().map(secrets::hash_password),
                ..UserPatch::default()
            };
            (db.update_user(u.id, &patch)?, false)
        }
        None => {
            let pw = password.unwrap_or_else(secrets::new_token_hex);
            let (passwd_hash, salt) = secrets::hash_password(&pw);
            let new = NewUser {
                name: username.to_string(),
                email: format!("{}@devforge.local", username.to_lowercase()),
                passwd_hash,
                salt,
                is_admin: true,
                must_change_password: false,
                visibility: "public".into(),
                ..NewUser::default()
            };
            (db.create_user(&new)?, true)
        }
    };
    let secret = secrets::new_token_hex();
    let token_name = format!("seed-admin-{}", secrets::new_token_hex()[..8].to_owned());
    db.create_token(
        user.id,
        &token_name,
        &secrets::sha256_hex(&secret),
        &secret[secret.len() - 8..],
        &Scope::all().to_stored(),
    )?;
    secrets::write_secret_file(token_out, secret.as_bytes()).map_err(io_err(token_out))?;
    Ok(SeededAdmin {
        username: user.name,
        created,
        token_name,
    })
}

/// Adds a user to `org` or `org:team` (for the OIDC `groups` claim).
pub fn add_member(data_dir: &Path, username: &str, group: &str) -> Result<(), CliError> {
    let (org, team) = match group.split_once(':') {
        Some((o, t)) => (o, t),
        None => (group, ""),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    };
    if !ok(org) || (group.contains(':') && !ok(team)) {
        return Err(CliError::BadGroup(group.to_string()));
    }
    let db = Db::open(data_dir)?;
    let user = db
        .user_by_name(username)?
        .ok_or_else(|| CliError::NoSuchUser(username.to_string()))?;
    db.add_membership(user.id, org, team)?;
    Ok(())
}

/// A registered app as written to the `--secret-out` file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AppCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// Registers an instance-wide OAuth2 app (owner id 0, like apps created in Forgejo's site admin
/// UI) and writes `{"client_id","client_secret"}` to `secret_out` (0600). Returns the client id.
pub fn add_oauth_app(
    data_dir: &Path,
    name: &str,
    redirect_uris: &[String],
    confidential: bool,
    secret_out: &Path,
) -> Result<String, CliError> {
    for u in redirect_uris {
        url::Url::parse(u).map_err(|_| CliError::BadRedirect(u.clone()))?;
    }
    let db = Db::open(data_dir)?;
    let (app, secret) = db.create_oauth_app(0, name, redirect_uris, confidential)?;
    let creds = AppCredentials {
        client_id: app.client_id.clone(),
        client_secret: secret,
    };
    let json = serde_json::to_vec_pretty(&creds)
        .map_err(|e| CliError::Db(DbError::Corrupt(e.to_string())))?;
    secrets::write_secret_file(secret_out, &json).map_err(io_err(secret_out))?;
    Ok(app.client_id)
}
