//! The dev forge's own sqlite file (`DIR/devforge.db`, WAL). One connection behind a mutex: the dev
//! server handles little traffic and every statement is short, so serialising them keeps the code
//! simple and makes check-then-insert sequences atomic without explicit transactions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::DbError;

/// File name of the database inside the data dir.
pub const DB_FILE: &str = "devforge.db";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    lower_name TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    lower_email TEXT NOT NULL UNIQUE,
    full_name TEXT NOT NULL DEFAULT '',
    login_name TEXT NOT NULL DEFAULT '',
    source_id INTEGER NOT NULL DEFAULT 0,
    passwd_hash TEXT NOT NULL DEFAULT '',
    salt TEXT NOT NULL DEFAULT '',
    is_admin INTEGER NOT NULL DEFAULT 0,
    is_active INTEGER NOT NULL DEFAULT 1,
    prohibit_login INTEGER NOT NULL DEFAULT 0,
    restricted INTEGER NOT NULL DEFAULT 0,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    visibility TEXT NOT NULL DEFAULT 'public',
    location TEXT NOT NULL DEFAULT '',
    website TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    pronouns TEXT NOT NULL DEFAULT '',
    language TEXT NOT NULL DEFAULT '',
    created_unix INTEGER NOT NULL,
    last_login_unix INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS access_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    token_last_eight TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_unix INTEGER NOT NULL,
    UNIQUE(uid, name)
);
CREATE TABLE IF NOT EXISTS memberships (
    uid INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org TEXT NOT NULL,
    team TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (uid, org, team)
);
CREATE TABLE IF NOT EXISTS oauth_apps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid INTEGER NOT NULL DEFAULT 0,
    name TEXT NOT NULL,
    client_id TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    confidential INTEGER NOT NULL,
    created_unix INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_grants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id INTEGER NOT NULL REFERENCES oauth_apps(id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    counter INTEGER NOT NULL DEFAULT 1,
    nonce TEXT NOT NULL DEFAULT '',
    created_unix INTEGER NOT NULL,
    UNIQUE(uid, app_id)
);
CREATE TABLE IF NOT EXISTS oauth_codes (
    code_hash TEXT PRIMARY KEY,
    grant_id INTEGER NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    code_challenge_method TEXT NOT NULL,
    nonce TEXT NOT NULL DEFAULT '',
    created_unix INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    lower_name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    private INTEGER NOT NULL DEFAULT 0,
    template INTEGER NOT NULL DEFAULT 0,
    is_empty INTEGER NOT NULL DEFAULT 1,
    default_branch TEXT NOT NULL DEFAULT 'main',
    object_format TEXT NOT NULL DEFAULT 'sha1',
    created_unix INTEGER NOT NULL,
    UNIQUE(owner_id, lower_name)
);
CREATE TABLE IF NOT EXISTS web_sessions (
    id_hash TEXT PRIMARY KEY,
    uid INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_unix INTEGER NOT NULL
);
"#;

/// Seconds since the epoch; all times are stored this way.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A user row, every column Forgejo's `User` JSON needs plus the credentials.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub full_name: String,
    pub login_name: String,
    pub source_id: i64,
    pub passwd_hash: String,
    pub salt: String,
    pub is_admin: bool,
    pub is_active: bool,
    pub prohibit_login: bool,
    pub restricted: bool,
    pub must_change_password: bool,
    pub visibility: String,
    pub location: String,
    pub website: String,
    pub description: String,
    pub pronouns: String,
    pub language: String,
    pub created_unix: i64,
    pub last_login_unix: i64,
}

const USER_COLS: &str = "id, name, email, full_name, login_name, source_id, passwd_hash, salt, is_admin, \
    is_active, prohibit_login, restricted, must_change_password, visibility, location, website, description, \
    pronouns, language, created_unix, last_login_unix";

impl UserRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            name: r.get(1)?,
            email: r.get(2)?,
            full_name: r.get(3)?,
            login_name: r.get(4)?,
            source_id: r.get(5)?,
            passwd_hash: r.get(6)?,
            salt: r.get(7)?,
            is_admin: r.get(8)?,
            is_active: r.get(9)?,
            prohibit_login: r.get(10)?,
            restricted: r.get(11)?,
            must_change_password: r.get(12)?,
            visibility: r.get(13)?,
            location: r.get(14)?,
            website: r.get(15)?,
            description: r.get(16)?,
            pronouns: r.get(17)?,
            language: r.get(18)?,
            created_unix: r.get(19)?,
            last_login_unix: r.get(20)?,
        })
    }
}

/// What is needed to insert a user; validation happens before (see `rules`).
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    pub email: String,
    pub full_name: String,
    pub login_name: String,
    pub source_id: i64,
    pub passwd_hash: String,
    pub salt: String,
    pub is_admin: bool,
    pub must_change_password: bool,
    pub restricted: bool,
    pub visibility: String,
    pub created_unix: Option<i64>,
}

/// Editable fields of `PATCH /admin/users/{u}`; `None` leaves a column unchanged.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub login_name: Option<String>,
    pub source_id: Option<i64>,
    pub password: Option<(String, String)>,
    pub must_change_password: Option<bool>,
    pub active: Option<bool>,
    pub admin: Option<bool>,
    pub prohibit_login: Option<bool>,
    pub restricted: Option<bool>,
    pub visibility: Option<String>,
    pub location: Option<String>,
    pub website: Option<String>,
    pub description: Option<String>,
    pub pronouns: Option<String>,
}

/// An access token row (the secret itself is never stored, only its sha256).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub uid: i64,
    pub name: String,
    pub token_last_eight: String,
    pub scope: String,
}

/// Shared handle to the database.
#[derive(Clone, Debug)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) `DIR/devforge.db`, enables WAL and foreign keys, applies the schema.
    pub fn open(data_dir: &Path) -> Result<Self, DbError> {
        if !data_dir.exists() {
            // The data dir holds the signing key and hashed credentials: owner-only when we create it.
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(data_dir)?;
        }
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Locks the connection. Callers must not hold the guard across an `.await`.
    pub fn lock(&self) -> Result<MutexGuard<'_, Connection>, DbError> {
        self.conn.lock().map_err(|_| DbError::Poisoned)
    }

    // ---- users ----

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, DbError> {
        let c = self.lock()?;
        let sql = format!("SELECT {USER_COLS} FROM users WHERE lower_name = ?1");
        Ok(c.query_row(&sql, [name.to_lowercase()], UserRow::from_row)
            .optional()?)
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, DbError> {
        let c = self.lock()?;
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
        Ok(c.query_row(&sql, [id], UserRow::from_row).optional()?)
    }

    /// Inserts a user, refusing a taken name or e-mail (case-insensitive, like Forgejo).
    pub fn create_user(&self, u: &NewUser) -> Result<UserRow, DbError> {
        let c = self.lock()?;
        let taken: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM users WHERE lower_name = ?1)",
            [u.name.to_lowercase()],
            |r| r.get(0),
        )?;
        if taken {
            return Err(DbError::UserExists(u.name.clone()));
        }
        let email_taken: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM users WHERE lower_email = ?1)",
            [u.email.to_lowercase()],
            |r| r.get(0),
        )?;
        if email_taken {
            return Err(DbError::EmailInUse(u.email.clone()));
        }
        c.execute(
            "INSERT INTO users (name, lower_name, email, lower_email, full_name, login_name, source_id, \
             passwd_hash, salt, is_admin, must_change_password, restricted, visibility, created_unix) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                u.name,
                u.name.to_lowercase(),
                u.email,
                u.email.to_lowercase(),
                u.full_name,
                u.login_name,
                u.source_id,
                u.passwd_hash,
                u.salt,
                u.is_admin,
                u.must_change_password,
                u.restricted,
                u.visibility,
                u.created_unix.unwrap_or_else(now_unix),
            ],
        )?;
        let id = c.last_insert_rowid();
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
        Ok(c.query_row(&sql, [id], UserRow::from_row)?)
    }

    /// Applies a patch; a new e-mail must not belong to another user.
    pub fn update_user(&self, id: i64, p: &UserPatch) -> Result<UserRow, DbError> {
        let c = self.lock()?;
        if let Some(email) = &p.email {
            let other: bool = c.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE lower_email = ?1 AND id != ?2)",
                params![email.to_lowercase(), id],
                |r| r.get(0),
            )?;
            if other {
                return Err(DbError::EmailInUse(email.clone()));
            }
            c.execute(
                "UPDATE users SET email = ?1, lower_email = ?2 WHERE id = ?3",
                params![email, email.to_lowercase(), id],
            )?;
        }
        let text_cols: [(&str, &Option<String>); 7] = [
            ("full_name", &p.full_name),
            ("login_name", &p.login_name),
            ("visibility", &p.visibility),
            ("location", &p.location),
            ("website", &p.website),
            ("description", &p.description),
            ("pronouns", &p.pronouns),
        ];
        for (col, val) in text_cols {
            if let Some(v) = val {
                c.execute(
                    &format!("UPDATE users SET {col} = ?1 WHERE id = ?2"),
                    params![v, id],
                )?;
            }
        }
        let bool_cols: [(&str, Option<bool>); 5] = [
            ("must_change_password", p.must_change_password),
            ("is_active", p.active),
            ("is_admin", p.admin),
            ("prohibit_login", p.prohibit_login),
            ("restricted", p.restricted),
        ];
        for (col, val) in bool_cols {
            if let Some(v) = val {
                c.execute(
                    &format!("UPDATE users SET {col} = ?1 WHERE id = ?2"),
                    params![v, id],
                )?;
            }
        }
        if let Some(s) = p.source_id {
            c.execute(
                "UPDATE users SET source_id = ?1 WHERE id = ?2",
                params![s, id],
            )?;
        }
        if let Some((hash, salt)) = &p.password {
            c.execute(
                "UPDATE users SET passwd_hash = ?1, salt = ?2 WHERE id = ?3",
                params![hash, salt, id],
            )?;
        }
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
        Ok(c.query_row(&sql, [id], UserRow::from_row)?)
    }

    pub fn touch_last_login(&self, id: i64) -> Result<(), DbError> {
        let c = self.lock()?;
        c.execute(
            "UPDATE users SET last_login_unix = ?1 WHERE id = ?2",
            params![now_unix(), id],
        )?;
        Ok(())
    }

    /// Deletes a user and (by cascade) their tokens, memberships, grants and sessions.
    pub fn delete_user(&self, id: i64) -> Result<(), DbError> {
        let c = self.lock()?;
        c.execute("DELETE FROM users WHERE id = ?1", [id])?;
        Ok(())
    }

    // ---- access tokens ----

    pub fn create_token(
        &self,
        uid: i64,
        name: &str,
        token_hash: &str,
        last_eight: &str,
        scope: &str,
    ) -> Result<TokenRow, DbError> {
        let c = self.lock()?;
        let used: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM access_tokens WHERE uid = ?1 AND name = ?2)",
            params![uid, name],
            |r| r.get(0),
        )?;
        if used {
            return Err(DbError::TokenNameUsed);
        }
        c.execute(
            "INSERT INTO access_tokens (uid, name, token_hash, token_last_eight, scope, created_unix) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![uid, name, token_hash, last_eight, scope, now_unix()],
        )?;
        Ok(TokenRow {
            id: c.last_insert_rowid(),
            uid,
            name: name.to_string(),
            token_last_eight: last_eight.to_string(),
            scope: scope.to_string(),
        })
    }

    pub fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRow>, DbError> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT id, uid, name, token_last_eight, scope FROM access_tokens WHERE token_hash = ?1",
            [token_hash],
            |r| {
                Ok(TokenRow {
                    id: r.get(0)?,
                    uid: r.get(1)?,
                    name: r.get(2)?,
                    token_last_eight: r.get(3)?,
                    scope: r.get(4)?,
                })
            },
        )
        .optional()?)
    }

    /// One page of a user's tokens (newest first, like Forgejo) and the total count.
    pub fn list_tokens(
        &self,
        uid: i64,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<TokenRow>, i64), DbError> {
        let c = self.lock()?;
        let total: i64 = c.query_row(
            "SELECT COUNT(*) FROM access_tokens WHERE uid = ?1",
            [uid],
            |r| r.get(0),
        )?;
        let mut stmt = c.prepare(
            "SELECT id, uid, name, token_last_eight, scope FROM access_tokens WHERE uid = ?1 \
             ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt
            .query_map(params![uid, limit, offset], |r| {
                Ok(TokenRow {
                    id: r.get(0)?,
                    uid: r.get(1)?,
                    name: r.get(2)?,
                    token_last_eight: r.get(3)?,
                    scope: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    /// Ids of a user's tokens matching `id` (if numeric) or else the name.
    pub fn find_token_ids(&self, uid: i64, id_or_name: &str) -> Result<Vec<i64>, DbError> {
        let c = self.lock()?;
        if let Ok(id) = id_or_name.parse::<i64>() {
            let found: Option<i64> = c
                .query_row(
                    "SELECT id FROM access_tokens WHERE uid = ?1 AND id = ?2",
                    params![uid, id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = found {
                return Ok(vec![id]);
            }
            if id != 0 {
                return Ok(vec![]);
            }
        }
        let mut stmt = c.prepare("SELECT id FROM access_tokens WHERE uid = ?1 AND name = ?2")?;
        let ids = stmt
            .query_map(params![uid, id_or_name], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    pub fn delete_token(&self, uid: i64, id: i64) -> Result<bool, DbError> {
        let c = self.lock()?;
        let n = c.execute(
            "DELETE FROM access_tokens WHERE uid = ?1 AND id = ?2",
            params![uid, id],
        )?;
        Ok(n > 0)
    }

    // ---- org/team memberships (for the OIDC `groups` claim) ----

    pub fn add_membership(&self, uid: i64, org: &str, team: &str) -> Result<(), DbError> {
        let c = self.lock()?;
        c.execute(
            "INSERT OR IGNORE INTO memberships (uid, org, team) VALUES (?1, ?2, ?3)",
            params![uid, org, team],
        )?;
        Ok(())
    }

    /// `groups` claim values: `org` for every org, `org:team` (team lower-cased) for every team.
    pub fn groups_of(&self, uid: i64) -> Result<Vec<String>, DbError> {
        let c = self.lock()?;
        let mut stmt =
            c.prepare("SELECT org, team FROM memberships WHERE uid = ?1 ORDER BY org, team")?;
        let rows = stmt
            .query_map([uid], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out: Vec<String> = Vec::new();
        for (org, team) in rows {
            if !out.contains(&org) {
                out.push(org.clone());
            }
            if !team.is_empty() {
                let g = format!("{org}:{}", team.to_lowercase());
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
        Ok(out)
    }
}
