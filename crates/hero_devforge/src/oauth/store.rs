//! Persistence of OAuth2 applications, grants (one per user and app, with the exact scope string
//! and the refresh counter), single-use authorization codes and web-login sessions. Secrets
//! (client secrets, codes, session ids) are stored only as sha256 digests.

use rusqlite::{params, OptionalExtension, Row};

use crate::db::{now_unix, Db, UserRow};
use crate::error::{ApiError, DbError};
use crate::oauth::jwt;
use crate::scopes::Scope;
use crate::secrets;
use crate::AppState;

/// A registered OAuth2 application.
#[derive(Debug, Clone)]
pub struct AppRow {
    pub id: i64,
    pub uid: i64,
    pub name: String,
    pub client_id: String,
    pub secret_hash: String,
    pub redirect_uris: Vec<String>,
    pub confidential: bool,
    pub created_unix: i64,
}

/// A user's authorization of an app.
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub id: i64,
    pub uid: i64,
    pub app_id: i64,
    pub scope: String,
    pub counter: i64,
    /// The nonce of the latest authorization, echoed in id_tokens (Forgejo keeps it on the grant).
    pub nonce: String,
}

/// A pending authorization code.
#[derive(Debug, Clone)]
pub struct CodeRow {
    pub grant_id: i64,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub code_challenge_method: String,
    pub nonce: String,
    pub created_unix: i64,
}

const APP_COLS: &str =
    "id, uid, name, client_id, secret_hash, redirect_uris, confidential, created_unix";

fn app_from_row(r: &Row<'_>) -> rusqlite::Result<(AppRow, String)> {
    let uris: String = r.get(5)?;
    Ok((
        AppRow {
            id: r.get(0)?,
            uid: r.get(1)?,
            name: r.get(2)?,
            client_id: r.get(3)?,
            secret_hash: r.get(4)?,
            redirect_uris: Vec::new(),
            confidential: r.get(6)?,
            created_unix: r.get(7)?,
        },
        uris,
    ))
}

fn finish_app((mut app, uris): (AppRow, String)) -> Result<AppRow, DbError> {
    app.redirect_uris =
        serde_json::from_str(&uris).map_err(|e| DbError::Corrupt(format!("redirect_uris: {e}")))?;
    Ok(app)
}

fn grant_from_row(r: &Row<'_>) -> rusqlite::Result<GrantRow> {
    Ok(GrantRow {
        id: r.get(0)?,
        uid: r.get(1)?,
        app_id: r.get(2)?,
        scope: r.get(3)?,
        counter: r.get(4)?,
        nonce: r.get(5)?,
    })
}

/// A random UUIDv4 string (Forgejo's client ids are UUIDs).
fn new_uuid() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Db {
    /// Registers an app; returns it and the client secret (shown once, stored hashed).
    pub fn create_oauth_app(
        &self,
        uid: i64,
        name: &str,
        redirect_uris: &[String],
        confidential: bool,
    ) -> Result<(AppRow, String), DbError> {
        let client_id = new_uuid();
        let secret = format!("gto_{}", secrets::new_token_hex());
        let uris = serde_json::to_string(redirect_uris)
            .map_err(|e| DbError::Corrupt(format!("redirect_uris: {e}")))?;
        let c = self.lock()?;
        c.execute(
            "INSERT INTO oauth_apps (uid, name, client_id, secret_hash, redirect_uris, confidential, created_unix) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![uid, name, client_id, secrets::sha256_hex(&secret), uris, confidential, now_unix()],
        )?;
        let id = c.last_insert_rowid();
        let sql = format!("SELECT {APP_COLS} FROM oauth_apps WHERE id = ?1");
        let app = finish_app(c.query_row(&sql, [id], app_from_row)?)?;
        Ok((app, secret))
    }

    /// Replaces an app's name, redirect URIs and confidentiality and regenerates its secret (the
    /// old one stops working at once); returns the app and the new secret.
    pub fn update_oauth_app(
        &self,
        id: i64,
        name: &str,
        redirect_uris: &[String],
        confidential: bool,
    ) -> Result<(AppRow, String), DbError> {
        let secret = format!("gto_{}", secrets::new_token_hex());
        let uris = serde_json::to_string(redirect_uris)
            .map_err(|e| DbError::Corrupt(format!("redirect_uris: {e}")))?;
        let c = self.lock()?;
        c.execute(
            "UPDATE oauth_apps SET name = ?1, redirect_uris = ?2, confidential = ?3, secret_hash = ?4 WHERE id = ?5",
            params![name, uris, confidential, secrets::sha256_hex(&secret), id],
        )?;
        let sql = format!("SELECT {APP_COLS} FROM oauth_apps WHERE id = ?1");
        let app = finish_app(c.query_row(&sql, [id], app_from_row)?)?;
        Ok((app, secret))
    }

    /// Deletes `uid`'s app `id` (and by cascade its grants and codes); `false` if there was none.
    pub fn delete_oauth_app(&self, id: i64, uid: i64) -> Result<bool, DbError> {
        let c = self.lock()?;
        let n = c.execute(
            "DELETE FROM oauth_apps WHERE id = ?1 AND uid = ?2",
            params![id, uid],
        )?;
        Ok(n == 1)
    }

    pub fn oauth_app_by_client_id(&self, client_id: &str) -> Result<Option<AppRow>, DbError> {
        let c = self.lock()?;
        let sql = format!("SELECT {APP_COLS} FROM oauth_apps WHERE client_id = ?1");
        c.query_row(&sql, [client_id], app_from_row)
            .optional()?
            .map(finish_app)
            .transpose()
    }

    pub fn oauth_apps_of(&self, uid: i64) -> Result<Vec<AppRow>, DbError> {
        let c = self.lock()?;
        let sql = format!("SELECT {APP_COLS} FROM oauth_apps WHERE uid = ?1 ORDER BY id");
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt
            .query_map([uid], app_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(finish_app).collect()
    }

    pub fn oauth_app_by_id(&self, id: i64) -> Result<Option<AppRow>, DbError> {
        let c = self.lock()?;
        let sql = format!("SELECT {APP_COLS} FROM oauth_apps WHERE id = ?1");
        c.query_row(&sql, [id], app_from_row)
            .optional()?
            .map(finish_app)
            .transpose()
    }

    pub fn grant_for(&self, uid: i64, app_id: i64) -> Result<Option<GrantRow>, DbError> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT id, uid, app_id, scope, counter, nonce FROM oauth_grants WHERE uid = ?1 AND app_id = ?2",
            params![uid, app_id],
            grant_from_row,
        )
        .optional()?)
    }

    pub fn grant_by_id(&self, id: i64) -> Result<Option<GrantRow>, DbError> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT id, uid, app_id, scope, counter, nonce FROM oauth_grants WHERE id = ?1",
            [id],
            grant_from_row,
        )
        .optional()?)
    }

    /// Creates the (user, app) grant with the exact scope string.
    pub fn create_grant(&self, uid: i64, app_id: i64, scope: &str) -> Result<GrantRow, DbError> {
        let c = self.lock()?;
        c.execute(
            "INSERT INTO oauth_grants (uid, app_id, scope, counter, created_unix) VALUES (?1, ?2, ?3, 1, ?4)",
            params![uid, app_id, scope, now_unix()],
        )?;
        Ok(GrantRow {
            id: c.last_insert_rowid(),
            uid,
            app_id,
            scope: scope.to_string(),
            counter: 1,
            nonce: String::new(),
        })
    }

    /// Rotation: bumps the grant counter if it still equals `expected`; returns the new value, or
    /// `None` if another exchange got there first (the presented refresh token is then stale).
    pub fn bump_grant_counter(&self, grant_id: i64, expected: i64) -> Result<Option<i64>, DbError> {
        let c = self.lock()?;
        let n = c.execute(
            "UPDATE oauth_grants SET counter = counter + 1 WHERE id = ?1 AND counter = ?2",
            params![grant_id, expected],
        )?;
        Ok((n == 1).then_some(expected + 1))
    }

    /// Revokes a grant (the user removes the app); its tokens stop working.
    pub fn delete_grant(&self, grant_id: i64) -> Result<(), DbError> {
        let c = self.lock()?;
        c.execute("DELETE FROM oauth_grants WHERE id = ?1", [grant_id])?;
        Ok(())
    }

    pub fn create_code(&self, code: &str, row: &CodeRow) -> Result<(), DbError> {
        let c = self.lock()?;
        c.execute(
            "INSERT INTO oauth_codes (code_hash, grant_id, redirect_uri, code_challenge, code_challenge_method, nonce, created_unix) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                secrets::sha256_hex(code),
                row.grant_id,
                row.redirect_uri,
                row.code_challenge,
                row.code_challenge_method,
                row.nonce,
                row.created_unix
            ],
        )?;
        Ok(())
    }

    /// Looks a code up without consuming it (Forgejo validates first, then invalidates).
    pub fn code_by_value(&self, code: &str) -> Result<Option<CodeRow>, DbError> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT grant_id, redirect_uri, code_challenge, code_challenge_method, nonce, created_unix \
             FROM oauth_codes WHERE code_hash = ?1",
            [secrets::sha256_hex(code)],
            |r| {
                Ok(CodeRow {
                    grant_id: r.get(0)?,
                    redirect_uri: r.get(1)?,
                    code_challenge: r.get(2)?,
                    code_challenge_method: r.get(3)?,
                    nonce: r.get(4)?,
                    created_unix: r.get(5)?,
                })
            },
        )
        .optional()?)
    }

    /// Consumes a code; `false` if it was already used (a concurrent exchange won).
    pub fn delete_code(&self, code: &str) -> Result<bool, DbError> {
        let c = self.lock()?;
        let n = c.execute(
            "DELETE FROM oauth_codes WHERE code_hash = ?1",
            [secrets::sha256_hex(code)],
        )?;
        Ok(n == 1)
    }

    /// Unconditional counter bump (code exchange); returns the new counter.
    pub fn increment_grant_counter(&self, grant_id: i64) -> Result<i64, DbError> {
        let c = self.lock()?;
        Ok(c.query_row(
            "UPDATE oauth_grants SET counter = counter + 1 WHERE id = ?1 RETURNING counter",
            [grant_id],
            |r| r.get(0),
        )?)
    }

    pub fn set_grant_nonce(&self, grant_id: i64, nonce: &str) -> Result<(), DbError> {
        let c = self.lock()?;
        c.execute(
            "UPDATE oauth_grants SET nonce = ?1 WHERE id = ?2",
            params![nonce, grant_id],
        )?;
        Ok(())
    }

    /// Starts a web session; returns the opaque id for the cookie.
    pub fn create_session(&self, uid: i64) -> Result<String, DbError> {
        let id = secrets::new_random_b64(32);
        let c = self.lock()?;
        c.execute(
            "INSERT INTO web_sessions (id_hash, uid, created_unix) VALUES (?1, ?2, ?3)",
            params![secrets::sha256_hex(&id), uid, now_unix()],
        )?;
        Ok(id)
    }

    pub fn session_user(&self, id: &str) -> Result<Option<i64>, DbError> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT uid FROM web_sessions WHERE id_hash = ?1",
            [secrets::sha256_hex(id)],
            |r| r.get(0),
        )
        .optional()?)
    }
}

/// Resolves an OAuth2 access token (JWT) to its user and effective API scope. Revoked grants and
/// deleted users make the token invalid.
pub async fn access_token_user(
    state: &AppState,
    token: &str,
) -> Result<Option<(UserRow, Scope)>, ApiError> {
    let keys = state.keys.get().await.map_err(ApiError::internal)?;
    let Some(claims) = jwt::verify_grant_token(&keys, token) else {
        return Ok(None);
    };
    if claims.tt != jwt::TYPE_ACCESS {
        return Ok(None);
    }
    let Some(grant) = state.db.grant_by_id(claims.gnt)? else {
        return Ok(None);
    };
    let Some(user) = state.db.user_by_id(grant.uid)? else {
        return Ok(None);
    };
    Ok(Some((user, Scope::from_oauth_scope_string(&grant.scope))))
}
