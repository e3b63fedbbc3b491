//! The proxy's sqlite database: users, sessions, groups, roles, providers, routes and token expiry metadata.
//!
//! Token *values* never go here (they live in the secret store); sessions are stored by the SHA-256 of their id, so
//! a copy of the database does not let anyone ride a session.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::claims::{self, ADMIN_GROUP};
use crate::config::RouteConfig;
use crate::error::{ProxyError, Result};

const SCHEMA: &str = r#"
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS users(
  id INTEGER PRIMARY KEY,
  username TEXT NOT NULL UNIQUE,
  provider TEXT NOT NULL,
  external_id TEXT NOT NULL,
  forge_username TEXT NOT NULL,
  is_admin INTEGER NOT NULL DEFAULT 0,
  disabled INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  context INTEGER,
  UNIQUE(provider, external_id));
CREATE TABLE IF NOT EXISTS sessions(
  id_hash TEXT PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  created_at INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  admin_granted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS groups(name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS group_members(
  grp TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
  member_kind TEXT NOT NULL CHECK(member_kind IN ('user','group')),
  member TEXT NOT NULL,
  PRIMARY KEY(grp, member_kind, member));
CREATE TABLE IF NOT EXISTS roles(name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS role_claims(
  role TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
  claim TEXT NOT NULL,
  PRIMARY KEY(role, claim));
CREATE TABLE IF NOT EXISTS group_roles(
  grp TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
  role TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
  PRIMARY KEY(grp, role));
CREATE TABLE IF NOT EXISTS providers(
  id TEXT PRIMARY KEY, issuer TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS token_meta(
  provider TEXT NOT NULL, id_hash TEXT NOT NULL, expires_at INTEGER NOT NULL,
  PRIMARY KEY(provider, id_hash));
CREATE TABLE IF NOT EXISTS routes(
  id TEXT PRIMARY KEY, host TEXT, path TEXT NOT NULL, upstream TEXT NOT NULL, policy TEXT NOT NULL,
  context TEXT, pass_token INTEGER NOT NULL,
  source TEXT NOT NULL CHECK(source IN ('config','rpc')),
  removed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS admin_bindings(
  forge_username TEXT PRIMARY KEY, provider TEXT NOT NULL, external_id TEXT NOT NULL, bound_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS owner_binding(
  forge_username TEXT PRIMARY KEY, provider TEXT NOT NULL, external_id TEXT NOT NULL, bound_at INTEGER NOT NULL);
INSERT OR IGNORE INTO groups(name) VALUES ('admin');
"#;

/// A provisioned user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    /// Local id.
    pub id: i64,
    /// Local username (unique; suffix ladder on collision).
    pub username: String,
    /// Provider id.
    pub provider: String,
    /// Provider `sub`.
    pub external_id: String,
    /// Login name at the provider (`preferred_username`), used by the admin allowlist.
    pub forge_username: String,
    /// Admin flag (mirrored by membership of the `admin` group).
    pub is_admin: bool,
    /// Disabled users cannot log in and lose their sessions.
    pub disabled: bool,
    /// The stack's context id for this user (`X-Hero-Context`), set over the admin RPC; none until set.
    pub context: Option<i64>,
}

impl User {
    /// The name to show the person: their provider login, or the local name once that login moved to another
    /// account.
    pub fn display_name(&self) -> &str {
        if self.forge_username.is_empty() {
            &self.username
        } else {
            &self.forge_username
        }
    }
}

/// A session row (keyed by the hash of the cookie value).
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    /// SHA-256 hex of the session id.
    pub id_hash: String,
    /// Owner.
    pub user_id: i64,
    /// Login time.
    pub created_at: u64,
    /// Last use (updated at most once a minute).
    pub last_seen: u64,
    /// This session has passed an admin check (so an allowlist removal revokes it).
    pub admin_granted: bool,
}

/// A provider row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProviderRow {
    /// Short id.
    pub id: String,
    /// Issuer URL.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// The constant scope string.
    pub scope: String,
}

/// sqlite behind a mutex; every operation is one short statement or transaction and never awaits.
pub struct Store {
    conn: Mutex<Connection>,
}

/// A provider's login names are unique at any moment, so the account that just proved `login` owns it: any
/// other row of the same provider still carrying it (an account renamed, or deleted and recreated under the
/// same name) loses it, and with it whatever the admin allowlist granted by name. Returns how many rows.
fn release_forge_username(
    c: &Connection,
    provider: &str,
    external_id: &str,
    login: &str,
) -> Result<usize> {
    Ok(c.execute(
        "UPDATE users SET forge_username = '' WHERE provider = ?1 AND external_id <> ?2
         AND forge_username = ?3 COLLATE NOCASE",
        params![provider, external_id, login],
    )?)
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        provider: r.get(2)?,
        external_id: r.get(3)?,
        forge_username: r.get(4)?,
        is_admin: r.get(5)?,
        disabled: r.get(6)?,
        context: r.get(7)?,
    })
}

const USER_COLS: &str =
    "id, username, provider, external_id, forge_username, is_admin, disabled, context";

/// Local username candidate from `preferred_username`: lower-case, `[a-z0-9_-]`, starts alphanumeric, ≤ 32 chars.
pub fn sanitize_username(preferred: &str) -> String {
    let mut s: String = preferred
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let start = s
        .find(|c: char| c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    s.drain(..start);
    s.truncate(32);
    if s.is_empty() {
        "user".into()
    } else {
        s
    }
}

impl Store {
    /// Opens (and migrates) the database file.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Self::init(conn)
    }

    /// In-memory database (tests).
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        conn.execute_batch(SCHEMA)?;
        // Databases made before `users.context` existed get the column (NULL: no context until set).
        let has_context: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM pragma_table_info('users') WHERE name = 'context')",
            [],
            |r| r.get(0),
        )?;
        if !has_context {
            conn.execute_batch("ALTER TABLE users ADD COLUMN context INTEGER")?;
        }
        let s = Store {
            conn: Mutex::new(conn),
        };
        s.backfill_admin_group()?;
        Ok(s)
    }

    fn c(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `admin` group membership equal to the `is_admin` flag (the flag is the authority).
    pub fn backfill_admin_group(&self) -> Result<()> {
        let c = self.c();
        c.execute(
            "INSERT OR IGNORE INTO group_members(grp, member_kind, member)
             SELECT 'admin', 'user', CAST(id AS TEXT) FROM users WHERE is_admin = 1",
            [],
        )?;
        c.execute(
            "DELETE FROM group_members WHERE grp = 'admin' AND (member_kind = 'group' OR
               (member_kind = 'user' AND member NOT IN (SELECT CAST(id AS TEXT) FROM users WHERE is_admin = 1)))",
            [],
        )?;
        Ok(())
    }

    // ---- users ----

    /// The user with this (provider, sub).
    pub fn user_by_external(&self, provider: &str, external_id: &str) -> Result<Option<User>> {
        Ok(self
            .c()
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE provider = ?1 AND external_id = ?2"),
                params![provider, external_id],
                user_from_row,
            )
            .optional()?)
    }

    /// The user with this id.
    pub fn user(&self, id: i64) -> Result<Option<User>> {
        Ok(self
            .c()
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )
            .optional()?)
    }

    /// The user with this local username.
    pub fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        Ok(self
            .c()
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE username = ?1"),
                [username],
                user_from_row,
            )
            .optional()?)
    }

    /// All users.
    pub fn users(&self) -> Result<Vec<User>> {
        let c = self.c();
        let mut st = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY id"))?;
        let rows = st
            .query_map([], user_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Finds or provisions the user keyed by (provider, sub). A new user gets `sanitize(preferred_username)`, or
    /// `<name>-2`, `<name>-3`, … if taken. An existing user keeps their username; the Forge login is refreshed.
    ///
    /// One transaction under the connection's lock from the first read: two first sign-ins of the same account
    /// at once (two tabs, a double click) both find "no such user" otherwise, and the second insert fails on
    /// the unique (provider, external_id) — a 500 for a sign-in that did nothing wrong.
    pub fn provision(
        &self,
        provider: &str,
        external_id: &str,
        preferred: &str,
        now: u64,
    ) -> Result<User> {
        let mut c = self.c();
        let tx = c.transaction()?;
        release_forge_username(&tx, provider, external_id, preferred)?;
        let existing = tx
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE provider = ?1 AND external_id = ?2"),
                params![provider, external_id],
                user_from_row,
            )
            .optional()?;
        if let Some(u) = existing {
            if u.forge_username != preferred {
                tx.execute(
                    "UPDATE users SET forge_username = ?1 WHERE id = ?2",
                    params![preferred, u.id],
                )?;
            }
            tx.commit()?;
            return Ok(User {
                forge_username: preferred.to_owned(),
                ..u
            });
        }
        let base = sanitize_username(preferred);
        let mut chosen = None;
        for n in 1..10_000u32 {
            let candidate = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let taken: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE username = ?1)",
                [&candidate],
                |r| r.get(0),
            )?;
            if !taken {
                chosen = Some(candidate);
                break;
            }
        }
        let username =
            chosen.ok_or_else(|| ProxyError::Invalid("username ladder exhausted".into()))?;
        tx.execute(
            "INSERT INTO users(username, provider, external_id, forge_username, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![username, provider, external_id, preferred, now as i64],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        drop(c);
        self.user(id)?
            .ok_or_else(|| ProxyError::NotFound(format!("user {id}")))
    }

    /// Binds an allowlisted login name to the account first admitted under it; `true` if `(provider,
    /// external_id)` is that account. A later account with the same name (deleted and recreated on the Forge)
    /// is refused until the name leaves the allowlist and comes back ([`Store::prune_admin_bindings`]).
    pub fn bind_admin(
        &self,
        login: &str,
        provider: &str,
        external_id: &str,
        now: u64,
    ) -> Result<bool> {
        self.bind_first("admin_bindings", login, provider, external_id, now)
    }

    /// The owner's counterpart of [`Store::bind_admin`]: binds the machine owner's login (the `cockpit/FORGE_OWNER`
    /// slot) to the account first admitted under it; `true` if `(provider, external_id)` is that account. Changing
    /// the owner forgets the binding ([`Store::prune_owner_binding`]), so changing it back re-binds, as removing and
    /// re-adding an admin name does.
    pub fn bind_owner(
        &self,
        login: &str,
        provider: &str,
        external_id: &str,
        now: u64,
    ) -> Result<bool> {
        self.bind_first("owner_binding", login, provider, external_id, now)
    }

    /// The one rule behind both bindings: `login` belongs to the first account admitted under it in `table`
    /// (one of the two binding tables, a constant: never input). Admin and owner routes carry every click of the
    /// people they admit, so the common case — the login already bound — is one read.
    fn bind_first(
        &self,
        table: &'static str,
        login: &str,
        provider: &str,
        external_id: &str,
        now: u64,
    ) -> Result<bool> {
        let c = self.c();
        let select = format!("SELECT provider, external_id FROM {table} WHERE forge_username = ?1");
        let bound = |c: &Connection| {
            c.query_row(&select, [login], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
        };
        let (p, x) = match bound(&c).optional()? {
            Some(b) => b,
            None => {
                c.execute(
                    &format!(
                        "INSERT OR IGNORE INTO {table}(forge_username, provider, external_id, bound_at)
                         VALUES (?1, ?2, ?3, ?4)"
                    ),
                    params![login, provider, external_id, now as i64],
                )?;
                bound(&c)?
            }
        };
        Ok(p == provider && x == external_id)
    }

    /// Forgets the owner binding unless it is for `owner` (the slot's current login).
    pub fn prune_owner_binding(&self, owner: &str) -> Result<usize> {
        Ok(self.c().execute(
            "DELETE FROM owner_binding WHERE forge_username <> ?1",
            [owner],
        )?)
    }

    /// Forgets the bindings of names no longer on the allowlist (so removing and re-adding a name re-binds it).
    pub fn prune_admin_bindings(&self, keep: &BTreeSet<String>) -> Result<usize> {
        let c = self.c();
        let names: Vec<String> = c
            .prepare("SELECT forge_username FROM admin_bindings")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut n = 0;
        for name in names.iter().filter(|n| !keep.contains(*n)) {
            n += c.execute(
                "DELETE FROM admin_bindings WHERE forge_username = ?1",
                [name],
            )?;
        }
        Ok(n)
    }

    /// The current bindings `(login, provider, external_id)`, for the admin RPC.
    pub fn admin_bindings(&self) -> Result<Vec<(String, String, String)>> {
        let c = self.c();
        let mut st = c.prepare(
            "SELECT forge_username, provider, external_id FROM admin_bindings ORDER BY forge_username",
        )?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Sets `is_admin` and the `admin` group membership together.
    pub fn set_admin(&self, user_id: i64, admin: bool) -> Result<()> {
        let mut c = self.c();
        let tx = c.transaction()?;
        let n = tx.execute(
            "UPDATE users SET is_admin = ?1 WHERE id = ?2",
            params![admin, user_id],
        )?;
        if n == 0 {
            return Err(ProxyError::NotFound(format!("user {user_id}")));
        }
        if admin {
            tx.execute(
                "INSERT OR IGNORE INTO group_members(grp, member_kind, member) VALUES ('admin', 'user', ?1)",
                [user_id.to_string()],
            )?;
        } else {
            tx.execute(
                "DELETE FROM group_members WHERE grp = 'admin' AND member_kind = 'user' AND member = ?1",
                [user_id.to_string()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets (or clears) the user's context id.
    pub fn set_context(&self, user_id: i64, context: Option<i64>) -> Result<()> {
        let n = self.c().execute(
            "UPDATE users SET context = ?1 WHERE id = ?2",
            params![context, user_id],
        )?;
        if n == 0 {
            return Err(ProxyError::NotFound(format!("user {user_id}")));
        }
        Ok(())
    }

    /// Enables or disables a user (disabling also deletes their sessions; the caller drops its cache).
    pub fn set_disabled(&self, user_id: i64, disabled: bool) -> Result<()> {
        let c = self.c();
        let n = c.execute(
            "UPDATE users SET disabled = ?1 WHERE id = ?2",
            params![disabled, user_id],
        )?;
        if n == 0 {
            return Err(ProxyError::NotFound(format!("user {user_id}")));
        }
        if disabled {
            c.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
        }
        Ok(())
    }

    // ---- sessions ----

    /// Records a new session.
    pub fn insert_session(&self, id_hash: &str, user_id: i64, now: u64) -> Result<()> {
        self.c().execute(
            "INSERT INTO sessions(id_hash, user_id, created_at, last_seen) VALUES (?1, ?2, ?3, ?3)",
            params![id_hash, user_id, now as i64],
        )?;
        Ok(())
    }

    /// Looks a session up.
    pub fn session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        Ok(self
            .c()
            .query_row(
                "SELECT id_hash, user_id, created_at, last_seen, admin_granted FROM sessions WHERE id_hash = ?1",
                [id_hash],
                |r| {
                    Ok(SessionRow {
                        id_hash: r.get(0)?,
                        user_id: r.get(1)?,
                        created_at: r.get::<_, i64>(2)? as u64,
                        last_seen: r.get::<_, i64>(3)? as u64,
                        admin_granted: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// All sessions (for the RPC listing).
    pub fn sessions(&self) -> Result<Vec<SessionRow>> {
        let c = self.c();
        let mut st = c.prepare("SELECT id_hash, user_id, created_at, last_seen, admin_granted FROM sessions ORDER BY created_at")?;
        let rows = st
            .query_map([], |r| {
                Ok(SessionRow {
                    id_hash: r.get(0)?,
                    user_id: r.get(1)?,
                    created_at: r.get::<_, i64>(2)? as u64,
                    last_seen: r.get::<_, i64>(3)? as u64,
                    admin_granted: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Updates `last_seen`.
    /// False when the session row is gone (revoked meanwhile).
    pub fn touch_session(&self, id_hash: &str, now: u64) -> Result<bool> {
        let n = self.c().execute(
            "UPDATE sessions SET last_seen = ?1 WHERE id_hash = ?2",
            params![now as i64, id_hash],
        )?;
        Ok(n > 0)
    }

    /// Marks that the session passed an admin check.
    pub fn mark_admin_granted(&self, id_hash: &str) -> Result<()> {
        self.c().execute(
            "UPDATE sessions SET admin_granted = 1 WHERE id_hash = ?1",
            [id_hash],
        )?;
        Ok(())
    }

    /// Deletes one session.
    pub fn delete_session(&self, id_hash: &str) -> Result<bool> {
        Ok(self
            .c()
            .execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?
            > 0)
    }

    /// Deletes the sessions idle since before `idle_before` or created before `created_before`; returns their
    /// hashes and users.
    pub fn delete_expired_sessions(
        &self,
        idle_before: u64,
        created_before: u64,
    ) -> Result<Vec<(String, i64)>> {
        let c = self.c();
        let mut st = c.prepare(
            "DELETE FROM sessions WHERE last_seen < ?1 OR created_at < ?2 RETURNING id_hash, user_id",
        )?;
        let rows = st
            .query_map(params![idle_before as i64, created_before as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// How many sessions the user has.
    pub fn count_user_sessions(&self, user_id: i64) -> Result<u64> {
        Ok(self.c().query_row(
            "SELECT COUNT(*) FROM sessions WHERE user_id = ?1",
            [user_id],
            |r| r.get(0),
        )?)
    }

    /// Deletes a user's sessions (only those that passed an admin check if `admin_only`); returns their hashes.
    pub fn delete_user_sessions(&self, user_id: i64, admin_only: bool) -> Result<Vec<String>> {
        let c = self.c();
        let sql = if admin_only {
            "DELETE FROM sessions WHERE user_id = ?1 AND admin_granted = 1 RETURNING id_hash"
        } else {
            "DELETE FROM sessions WHERE user_id = ?1 RETURNING id_hash"
        };
        let mut st = c.prepare(sql)?;
        let rows = st
            .query_map([user_id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    /// Users that hold at least one admin-granted session.
    pub fn users_with_admin_sessions(&self) -> Result<Vec<User>> {
        let c = self.c();
        let mut st = c.prepare(&format!(
            "SELECT {USER_COLS} FROM users WHERE id IN (SELECT user_id FROM sessions WHERE admin_granted = 1)"
        ))?;
        let rows = st
            .query_map([], user_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    // ---- groups and roles ----

    /// Creates a group.
    pub fn create_group(&self, name: &str) -> Result<()> {
        claims::validate_group_name(name).map_err(ProxyError::Invalid)?;
        self.c()
            .execute("INSERT OR IGNORE INTO groups(name) VALUES (?1)", [name])?;
        Ok(())
    }

    /// Deletes a group (and its memberships in other groups). The `admin` group cannot be deleted.
    pub fn delete_group(&self, name: &str) -> Result<bool> {
        if name == ADMIN_GROUP {
            return Err(ProxyError::Invalid("the admin group is reserved".into()));
        }
        let c = self.c();
        c.execute(
            "DELETE FROM group_members WHERE member_kind = 'group' AND member = ?1",
            [name],
        )?;
        Ok(c.execute("DELETE FROM groups WHERE name = ?1", [name])? > 0)
    }

    /// Group names.
    pub fn groups(&self) -> Result<Vec<String>> {
        let c = self.c();
        let mut st = c.prepare("SELECT name FROM groups ORDER BY name")?;
        let rows = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    /// Members of a group as (`user`|`group`, username-or-group-name).
    pub fn group_members(&self, grp: &str) -> Result<Vec<(String, String)>> {
        let c = self.c();
        let mut st = c.prepare(
            "SELECT m.member_kind, COALESCE(u.username, m.member) FROM group_members m
             LEFT JOIN users u ON m.member_kind = 'user' AND CAST(u.id AS TEXT) = m.member
             WHERE m.grp = ?1 ORDER BY 1, 2",
        )?;
        let rows = st
            .query_map([grp], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn group_exists(c: &Connection, grp: &str) -> Result<()> {
        let ok: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM groups WHERE name = ?1)",
            [grp],
            |r| r.get(0),
        )?;
        if ok {
            Ok(())
        } else {
            Err(ProxyError::NotFound(format!("group {grp}")))
        }
    }

    /// Adds a user (by id) to a group. The `admin` group is refused: use `set_admin` (manual desync rejected).
    pub fn add_user_to_group(&self, grp: &str, user_id: i64) -> Result<()> {
        if grp == ADMIN_GROUP {
            return Err(ProxyError::Invalid(
                "admin membership follows is_admin; use users.set_admin".into(),
            ));
        }
        let c = self.c();
        Self::group_exists(&c, grp)?;
        c.execute(
            "INSERT OR IGNORE INTO group_members(grp, member_kind, member) VALUES (?1, 'user', ?2)",
            params![grp, user_id.to_string()],
        )?;
        Ok(())
    }

    /// Removes a user from a group (not `admin`, see `add_user_to_group`).
    pub fn remove_user_from_group(&self, grp: &str, user_id: i64) -> Result<bool> {
        if grp == ADMIN_GROUP {
            return Err(ProxyError::Invalid(
                "admin membership follows is_admin; use users.set_admin".into(),
            ));
        }
        Ok(self.c().execute(
            "DELETE FROM group_members WHERE grp = ?1 AND member_kind = 'user' AND member = ?2",
            params![grp, user_id.to_string()],
        )? > 0)
    }

    /// Nests group `member` inside `grp` (cycles are allowed and harmless).
    pub fn add_group_to_group(&self, grp: &str, member: &str) -> Result<()> {
        if grp == ADMIN_GROUP {
            return Err(ProxyError::Invalid(
                "admin membership follows is_admin; use users.set_admin".into(),
            ));
        }
        let c = self.c();
        Self::group_exists(&c, grp)?;
        Self::group_exists(&c, member)?;
        c.execute(
            "INSERT OR IGNORE INTO group_members(grp, member_kind, member) VALUES (?1, 'group', ?2)",
            params![grp, member],
        )?;
        Ok(())
    }

    /// Un-nests a group.
    pub fn remove_group_from_group(&self, grp: &str, member: &str) -> Result<bool> {
        Ok(self.c().execute(
            "DELETE FROM group_members WHERE grp = ?1 AND member_kind = 'group' AND member = ?2",
            params![grp, member],
        )? > 0)
    }

    /// Creates a role.
    pub fn create_role(&self, name: &str) -> Result<()> {
        claims::validate_group_name(name).map_err(ProxyError::Invalid)?;
        self.c()
            .execute("INSERT OR IGNORE INTO roles(name) VALUES (?1)", [name])?;
        Ok(())
    }

    /// Deletes a role.
    pub fn delete_role(&self, name: &str) -> Result<bool> {
        Ok(self
            .c()
            .execute("DELETE FROM roles WHERE name = ?1", [name])?
            > 0)
    }

    /// Roles with their claims.
    pub fn roles(&self) -> Result<Vec<(String, Vec<String>)>> {
        let c = self.c();
        let mut st = c.prepare("SELECT name FROM roles ORDER BY name")?;
        let names = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        let mut out = Vec::new();
        for n in names {
            let mut st =
                c.prepare("SELECT claim FROM role_claims WHERE role = ?1 ORDER BY claim")?;
            let claims = st
                .query_map([&n], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            out.push((n, claims));
        }
        Ok(out)
    }

    /// Adds a claim to a role after validating grammar and reserved prefixes.
    pub fn add_role_claim(&self, role: &str, claim: &str) -> Result<()> {
        let claim = claims::validate_role_claim(claim).map_err(ProxyError::Invalid)?;
        let c = self.c();
        let ok: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM roles WHERE name = ?1)",
            [role],
            |r| r.get(0),
        )?;
        if !ok {
            return Err(ProxyError::NotFound(format!("role {role}")));
        }
        c.execute(
            "INSERT OR IGNORE INTO role_claims(role, claim) VALUES (?1, ?2)",
            params![role, claim.as_str()],
        )?;
        Ok(())
    }

    /// Removes a claim from a role.
    pub fn remove_role_claim(&self, role: &str, claim: &str) -> Result<bool> {
        Ok(self.c().execute(
            "DELETE FROM role_claims WHERE role = ?1 AND claim = ?2",
            params![role, claim],
        )? > 0)
    }

    /// Grants a role to a group.
    pub fn grant_role(&self, grp: &str, role: &str) -> Result<()> {
        let c = self.c();
        Self::group_exists(&c, grp)?;
        c.execute(
            "INSERT OR IGNORE INTO group_roles(grp, role) VALUES (?1, ?2)",
            params![grp, role],
        )
        .map_err(|_| ProxyError::NotFound(format!("role {role}")))?;
        Ok(())
    }

    /// Revokes a role from a group.
    pub fn revoke_role(&self, grp: &str, role: &str) -> Result<bool> {
        Ok(self.c().execute(
            "DELETE FROM group_roles WHERE grp = ?1 AND role = ?2",
            params![grp, role],
        )? > 0)
    }

    /// The user's groups (transitive) and claims.
    pub fn claims_for(&self, user: &User) -> Result<(BTreeSet<String>, Vec<hero_identity::Claim>)> {
        let c = self.c();
        let mut st = c.prepare_cached(
            "SELECT grp FROM group_members WHERE member_kind = 'user' AND member = ?1",
        )?;
        let direct = st
            .query_map([user.id.to_string()], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        let mut parents_st = c.prepare_cached(
            "SELECT grp FROM group_members WHERE member_kind = 'group' AND member = ?1",
        )?;
        let mut err = None;
        let groups = claims::transitive_groups(direct, |g| {
            match parents_st
                .query_map([g], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            {
                Ok(v) => v,
                Err(e) => {
                    err = Some(e);
                    Vec::new()
                }
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        let mut role_claims = Vec::new();
        let mut rc = c.prepare_cached(
            "SELECT rc.claim FROM group_roles gr JOIN role_claims rc ON rc.role = gr.role WHERE gr.grp = ?1",
        )?;
        for g in &groups {
            let v = rc
                .query_map([g], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            role_claims.extend(v);
        }
        let claims = claims::assemble(&user.username, &groups, role_claims);
        Ok((groups, claims))
    }

    /// Sets the user's membership of the groups that are targets of the Forge group map: in exactly the targets
    /// of the Forge groups they have, out of the other targets.
    pub fn sync_mapped_groups(
        &self,
        user_id: i64,
        targets: &BTreeSet<String>,
        wanted: &BTreeSet<String>,
    ) -> Result<()> {
        for t in targets {
            if t == ADMIN_GROUP {
                continue;
            }
            self.create_group(t)?;
            if wanted.contains(t) {
                self.add_user_to_group(t, user_id)?;
            } else {
                self.remove_user_from_group(t, user_id)?;
            }
        }
        Ok(())
    }

    // ---- providers ----

    /// Inserts or replaces a provider.
    pub fn upsert_provider(&self, p: &ProviderRow) -> Result<()> {
        self.c().execute(
            "INSERT INTO providers(id, issuer, client_id, scope) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET issuer = ?2, client_id = ?3, scope = ?4",
            params![p.id, p.issuer, p.client_id, p.scope],
        )?;
        Ok(())
    }

    /// All providers.
    pub fn providers(&self) -> Result<Vec<ProviderRow>> {
        let c = self.c();
        let mut st = c.prepare("SELECT id, issuer, client_id, scope FROM providers ORDER BY id")?;
        let rows = st
            .query_map([], |r| {
                Ok(ProviderRow {
                    id: r.get(0)?,
                    issuer: r.get(1)?,
                    client_id: r.get(2)?,
                    scope: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    // ---- routes ----

    /// Writes the config file's routes (validated, with ids): each replaces its previous file version, unless the
    /// id was set or removed over RPC since (RPC wins); file routes no longer in the file are dropped.
    pub fn seed_routes(&self, routes: &[RouteConfig]) -> Result<()> {
        let mut c = self.c();
        let tx = c.transaction()?;
        let mut keep = BTreeSet::new();
        for r in routes {
            let id = r.id.clone().unwrap_or_default();
            tx.execute(
                "INSERT INTO routes(id, host, path, upstream, policy, context, pass_token, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'config')
                 ON CONFLICT(id) DO UPDATE SET host = ?2, path = ?3, upstream = ?4, policy = ?5, context = ?6,
                   pass_token = ?7 WHERE routes.source = 'config'",
                params![id, r.host, r.path, r.upstream, r.policy, r.context, r.pass_token],
            )?;
            keep.insert(id);
        }
        let stale: Vec<String> = {
            let mut st = tx.prepare("SELECT id FROM routes WHERE source = 'config'")?;
            let ids = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            ids.into_iter().filter(|i| !keep.contains(i)).collect()
        };
        for id in stale {
            tx.execute("DELETE FROM routes WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds or replaces a route by id (`routes.set`); it then wins over the config file.
    pub fn set_route(&self, r: &RouteConfig) -> Result<()> {
        self.c().execute(
            "INSERT INTO routes(id, host, path, upstream, policy, context, pass_token, source, removed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'rpc', 0)
             ON CONFLICT(id) DO UPDATE SET host = ?2, path = ?3, upstream = ?4, policy = ?5, context = ?6,
               pass_token = ?7, source = 'rpc', removed = 0",
            params![r.id, r.host, r.path, r.upstream, r.policy, r.context, r.pass_token],
        )?;
        Ok(())
    }

    /// Removes a route by id (`routes.remove`), leaving a tombstone so a file route stays removed after restarts.
    pub fn remove_route(&self, id: &str) -> Result<bool> {
        let n = self.c().execute(
            "UPDATE routes SET removed = 1, source = 'rpc' WHERE id = ?1 AND removed = 0",
            params![id],
        )?;
        Ok(n > 0)
    }

    /// The live routes.
    pub fn routes(&self) -> Result<Vec<RouteConfig>> {
        let c = self.c();
        let mut st = c.prepare(
            "SELECT id, host, path, upstream, policy, context, pass_token FROM routes
             WHERE removed = 0 ORDER BY id",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(RouteConfig {
                    id: Some(r.get(0)?),
                    host: r.get(1)?,
                    path: r.get(2)?,
                    upstream: r.get(3)?,
                    policy: r.get(4)?,
                    context: r.get(5)?,
                    pass_token: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    // ---- token expiry ----

    /// When the stored access token of an identity expires.
    pub fn token_expiry(&self, provider: &str, id_hash: &str) -> Result<Option<u64>> {
        Ok(self
            .c()
            .query_row(
                "SELECT expires_at FROM token_meta WHERE provider = ?1 AND id_hash = ?2",
                params![provider, id_hash],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v as u64))
    }

    /// Records the expiry of a freshly stored access token.
    pub fn set_token_expiry(&self, provider: &str, id_hash: &str, expires_at: u64) -> Result<()> {
        self.c().execute(
            "INSERT INTO token_meta(provider, id_hash, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(provider, id_hash) DO UPDATE SET expires_at = ?3",
            params![provider, id_hash, expires_at as i64],
        )?;
        Ok(())
    }

    /// Forgets an identity's token expiry.
    pub fn delete_token_expiry(&self, provider: &str, id_hash: &str) -> Result<()> {
        self.c().execute(
            "DELETE FROM token_meta WHERE provider = ?1 AND id_hash = ?2",
            params![provider, id_hash],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_ladder_and_identity_key() {
        let s = Store::open_in_memory().unwrap();
        let a = s.provision("forge", "1001", "Alice", 1).unwrap();
        let b = s.provision("forge", "2002", "alice", 1).unwrap();
        let c = s.provision("other", "1001", "alice", 1).unwrap();
        assert_eq!(
            (
                a.username.as_str(),
                b.username.as_str(),
                c.username.as_str()
            ),
            ("alice", "alice-2", "alice-3")
        );
        // Same (provider, sub) is the same user even if the Forge login was renamed.
        let a2 = s.provision("forge", "1001", "alice.renamed", 2).unwrap();
        assert_eq!(a2.id, a.id);
        assert_eq!(a2.username, "alice");
        assert_eq!(a2.forge_username, "alice.renamed");
        assert_eq!(sanitize_username("..Bob Smith!"), "bob-smith-");
        assert_eq!(sanitize_username("???"), "user");
    }

    /// Every local name the proxy makes has the shape backends are told to expect (`hero_identity::is_local_username`,
    /// which refuses anything else in an assertion), collision suffix included.
    #[test]
    fn every_local_username_made_passes_the_contract_check() {
        let long = "x".repeat(200);
        for login in [
            "alice",
            "Alice.Smith",
            "..Bob Smith!",
            "???",
            "",
            "-x",
            "_x",
            "ünïcödé",
            "аlice",
            "a\nb",
            "9",
            &long,
        ] {
            let base = sanitize_username(login);
            for name in [base.clone(), format!("{base}-2"), format!("{base}-9999")] {
                assert!(
                    hero_identity::is_local_username(&name),
                    "{login:?} -> {name:?}"
                );
            }
        }
    }

    #[test]
    fn claims_through_nested_groups_and_admin_sync() {
        let s = Store::open_in_memory().unwrap();
        let u = s.provision("forge", "1", "alice", 0).unwrap();
        for g in ["eng", "platform", "all"] {
            s.create_group(g).unwrap();
        }
        s.add_user_to_group("eng", u.id).unwrap();
        s.add_group_to_group("platform", "eng").unwrap();
        s.add_group_to_group("all", "platform").unwrap();
        s.add_group_to_group("eng", "all").unwrap(); // cycle
        s.create_role("dns-admin").unwrap();
        s.add_role_claim("dns-admin", "dns.zone.write").unwrap();
        assert!(s.add_role_claim("dns-admin", "users.bob").is_err());
        assert!(s.add_role_claim("dns-admin", "a.b.c.d.e.f.g.h.i").is_err());
        s.grant_role("all", "dns-admin").unwrap();
        let (_, claims) = s.claims_for(&u).unwrap();
        let names: Vec<&str> = claims.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "dns.zone.write",
                "groups.all",
                "groups.eng",
                "groups.platform",
                "users.alice"
            ]
        );

        assert!(s.add_user_to_group("admin", u.id).is_err());
        s.set_admin(u.id, true).unwrap();
        let (_, claims) = s.claims_for(&u).unwrap();
        assert!(claims.iter().any(|c| c.as_str() == "admin"));
        assert!(claims.iter().any(|c| c.as_str() == "groups.admin"));
        s.set_admin(u.id, false).unwrap();
        let (groups, _) = s.claims_for(&u).unwrap();
        assert!(!groups.contains("admin"));
    }

    /// Two first sign-ins of the same account at once (two tabs, a double click) both land on one user. Before,
    /// both could find no user, and the second insert failed on the unique (provider, external_id): a 500.
    #[test]
    fn concurrent_first_sign_ins_of_one_account_share_one_user() {
        use std::sync::Arc;
        let s = Arc::new(Store::open_in_memory().unwrap());
        for round in 0..40 {
            let sub = format!("sub-{round}");
            let start = Arc::new(std::sync::Barrier::new(4));
            let ids: Vec<i64> = (0..4)
                .map(|_| {
                    let (s, start, sub) = (s.clone(), start.clone(), sub.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        s.provision("forge", &sub, "carol", 0).unwrap().id
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            assert!(ids.iter().all(|&id| id == ids[0]), "round {round}: {ids:?}");
        }
        assert_eq!(s.users().unwrap().len(), 40);
    }
}
