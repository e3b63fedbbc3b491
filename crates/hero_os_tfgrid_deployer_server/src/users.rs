//! The Forge user lifecycle: create or adopt, mint and hold the token, reveal, list, delete.
//!
//! `create_user` is written so that a crash or a Forge failure at any point leaves a record that a
//! repeated call finishes: the deployer row is inserted first (state `pending`), the generated
//! password is stored in the secret store *before* Forge is asked to create the account, and only
//! when the token is held does the row become `active`. Every outcome is audited.

use hero_os_tfgrid_deployer_sdk::types::*;
use hero_os_tfgrid_deployer_sdk::username;
use hero_os_tfgrid_deployer_sdk::ErrorKind;
use hero_secrets::SecretValue;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::audit::{self, Actor, Entry};
use crate::clock::alphanumeric_password;
use crate::db::Cached;
use crate::error::ServiceError;
use crate::forge::{ConflictReason, ForgeError, NewForgeUser};
use crate::service::{slots, Deployer};

/// How long a `create_user` waits for another one of the same name to finish: above the time
/// a create takes with every Forge call timing out on each attempt of the default policy.
pub const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Length of generated initial passwords.
pub const PASSWORD_LEN: usize = 32;

const USER_COLUMNS: &str = "user_id, forge_username, display_name, email, forge_user_id, forge_created, \
    forge_token_set, forge_token_note, initial_password_held, setup_state, vm_status, created_at, updated_at, \
    (SELECT v.health_state FROM vms v WHERE v.user_id = users.user_id AND v.state = 'ready' \
     ORDER BY v.vm_id DESC LIMIT 1), \
    (SELECT v.expires_at FROM vms v WHERE v.user_id = users.user_id AND v.state != 'decommissioned' \
     ORDER BY v.vm_id DESC LIMIT 1), \
    (SELECT v.health_since FROM vms v WHERE v.user_id = users.user_id AND v.state = 'ready' \
     ORDER BY v.vm_id DESC LIMIT 1)";

/// The `expires_before` filter of `list_users`, with its parameter at `?n` (NULL: no filter).
/// One text for the count, the page and the look-behind probe, so the three cannot disagree on
/// which users a filtered listing holds.
fn expiring_clause(n: usize) -> String {
    format!(
        "(?{n} IS NULL OR EXISTS (SELECT 1 FROM vms v WHERE v.user_id = users.user_id \
         AND v.state != 'decommissioned' AND v.expires_at IS NOT NULL AND v.expires_at < ?{n}))"
    )
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        user_id: r.get(0)?,
        forge_username: r.get(1)?,
        display_name: r.get(2)?,
        email: r.get(3)?,
        forge_user_id: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
        forge_created: r.get(5)?,
        forge_token_set: r.get(6)?,
        forge_token_note: r.get(7)?,
        initial_password_held: r.get(8)?,
        setup_complete: r.get::<_, String>(9)? == "active",
        // Typed: a stored status nobody knows is an error, never read as "no VM".
        vm_status: r.get::<_, VmStatus>(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        vm_health: r.get(13)?,
        vm_expires_at: r.get(14)?,
        vm_health_since: r.get(15)?,
    })
}

pub fn user_by_id(conn: &Connection, user_id: UserId) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"
    ))?
    .query_row([user_id], user_from_row)
    .optional()
}

pub fn user_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE forge_username = ?1"
    ))?
    .query_row([name], user_from_row)
    .optional()
}

/// Upper bound for a prefix range scan: every string starting with `prefix` sorts below it.
pub(crate) fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

fn encode_cursor(name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

fn decode_cursor(cursor: &str) -> Result<String, ServiceError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ServiceError::InvalidParams(format!("invalid cursor {cursor:?}")))
}

/// Default page size of `list_users`.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page of `list_users`.
pub const MAX_PAGE: u32 = 500;
/// Largest page of `list_events` (its documented range is 1..=500).
pub const MAX_EVENTS_PAGE: u32 = 500;

/// What `create_user` records about the Forge side once it is done.
struct ForgeOutcome {
    forge_user_id: i64,
    /// The account's email and full name as Forge holds them: what the record keeps, since a resumed call may
    /// bring other values than the attempt that made the account (or an adopted account has its own).
    email: String,
    full_name: String,
    forge_created: bool,
    token_set: bool,
    token_note: Option<String>,
    password: Option<SecretValue>,
}

fn validate_email(email: &str) -> Result<(), ServiceError> {
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ServiceError::InvalidParams(format!(
            "email {email:?} is not a valid address"
        )))
    }
}

impl Deployer {
    /// Makes sure a Forge account exists for `username` and holds what we need for it.
    pub async fn create_user(
        &self,
        actor: &Actor,
        params: CreateUserParams,
    ) -> Result<CreateUserResult, ServiceError> {
        username::validate(&params.username)?;
        let name = params.username.clone();
        let email = params
            .email
            .clone()
            .unwrap_or_else(|| format!("{name}@{}", self.settings.email_domain));
        validate_email(&email)?;
        if let Some(d) = &params.display_name {
            if d.chars().count() > 255 || d.chars().any(char::is_control) {
                return Err(ServiceError::InvalidParams(
                    "display_name must be at most 255 characters without control characters".into(),
                ));
            }
        }

        // One caller of a name at a time, from the row lookup to the final update: a second
        // caller waits and then sees the first one's result (see `db/claims.rs`).
        let _claim = self.claim_name(&name).await?;
        let now = self.clock.now();
        let (user_id, resumed) = {
            let (name, email, display) = (name.clone(), email.clone(), params.display_name.clone());
            self.db
                .write(move |conn| -> Result<(UserId, bool), ServiceError> {
                    let found = user_by_name(conn, &name)?;
                    let result = match found {
                        Some(user) if user.setup_complete => {
                            return Err(ServiceError::AlreadyExists(Box::new(user)))
                        }
                        Some(user) => (user.user_id, true),
                        None => {
                            conn.execute_cached(
                                "INSERT INTO users(forge_username, display_name, email, created_at, updated_at) \
                                 VALUES (?1, ?2, ?3, ?4, ?4)",
                                params![name, display, email, now],
                            )?;
                            (conn.last_insert_rowid(), false)
                        }
                    };
                    Ok(result)
                })
                .await?
        };

        let subject = format!("user:{name}");
        let outcome = self
            .ensure_forge_account(user_id, &name, params.display_name.as_deref(), &email)
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(error) => {
                let discarded = params.discard_if_refused
                    && !resumed
                    && matches!(
                        error.kind(),
                        ErrorKind::ForgeConflict | ErrorKind::ForgeAuthRejected
                    )
                    && self.discard_refused(user_id).await;
                let detail = if discarded {
                    format!("create_user refused: {error}. Forge holds no account of it, so the record this call made was removed.")
                } else {
                    format!(
                        "{}create_user stopped: {error}. The record stays pending; run create_user again to finish.",
                        if resumed { "resumed; " } else { "" }
                    )
                };
                self.audit(
                    actor,
                    "user.create",
                    &subject,
                    &error_outcome(&error),
                    Some(&detail),
                )
                .await?;
                return Err(error);
            }
        };

        let user = {
            let note = outcome.token_note.clone();
            let held = outcome.password.is_some();
            let (forge_user_id, created, token_set) = (
                outcome.forge_user_id,
                outcome.forge_created,
                outcome.token_set,
            );
            // Forge's values where it has them (an empty email is one the token could not read: keep ours).
            let email = Some(outcome.email.clone()).filter(|e| !e.is_empty());
            let display = Some(outcome.full_name.clone()).filter(|d| !d.is_empty());
            let now = self.clock.now();
            self.db
                .write(move |conn| -> Result<User, ServiceError> {
                    conn.execute_cached(
                        "UPDATE users SET forge_user_id = ?2, forge_created = ?3, forge_token_set = ?4, \
                         forge_token_note = ?5, initial_password_held = ?6, setup_state = 'active', updated_at = ?7, \
                         email = COALESCE(?8, email), display_name = ?9 WHERE user_id = ?1",
                        params![user_id, forge_user_id, created, token_set, note, held, now, email, display],
                    )?;
                    user_by_id(conn, user_id)?
                        .ok_or_else(|| ServiceError::Internal("user vanished during create".into()))
                })
                .await?
        };
        let detail = match (outcome.forge_created, outcome.token_set) {
            (true, true) => "Forge account created; token minted and stored".to_owned(),
            (true, false) => "Forge account created; no token".to_owned(),
            (false, _) => format!(
                "existing Forge account adopted (forge id {}); {}",
                outcome.forge_user_id,
                outcome.token_note.as_deref().unwrap_or("token minted")
            ),
        };
        self.audit(actor, "user.create", &subject, "ok", Some(&detail))
            .await?;
        tracing::info!(user_id, username = %name, adopted = !outcome.forge_created, "user ready");
        Ok(CreateUserResult {
            user_id,
            forge_username: name,
            initial_password: outcome.password.map(|p| p.expose().to_owned()),
            forge_token_set: outcome.token_set,
            forge_token_note: outcome.token_note,
            adopted: !outcome.forge_created,
            user,
        })
    }

    /// Removes the pending record `create_user` just made, with its secrets, if Forge holds no account of it
    /// (`forge_user_id` unset). Called with the name's claim held, so no other caller of the name can have
    /// resumed the record in between. True if removed; a failure is logged and keeps the record (pending,
    /// which a repeat call finishes or `user delete` removes), never hiding the create's own error.
    async fn discard_refused(&self, user_id: UserId) -> bool {
        let unfinished = self
            .db
            .call(move |conn| -> Result<bool, ServiceError> {
                Ok(user_by_id(conn, user_id)?
                    .is_some_and(|u| !u.setup_complete && u.forge_user_id == 0))
            })
            .await;
        let result = async {
            if !unfinished? {
                return Ok(false);
            }
            self.delete_user_secrets(user_id).await?;
            self.db
                .write(move |conn| -> Result<(), ServiceError> {
                    conn.execute_cached("DELETE FROM ssh_keys WHERE user_id = ?1", [user_id])?;
                    conn.execute_cached(
                        "DELETE FROM users WHERE user_id = ?1 AND setup_state = 'pending'",
                        [user_id],
                    )?;
                    Ok(())
                })
                .await?;
            Ok::<_, ServiceError>(true)
        }
        .await;
        result.unwrap_or_else(|e| {
            tracing::warn!(user_id, error = %e, "the refused create's record could not be removed; it stays pending");
            false
        })
    }

    /// Deletes every secret slot of `user_id` (password, token, keys, client secret), before its rows go: a row
    /// left behind by a crash in between still names the user, secrets left behind would name nobody.
    async fn delete_user_secrets(&self, user_id: UserId) -> Result<(), ServiceError> {
        for slot in self.secrets.list(&slots::user_prefix(user_id)).await? {
            self.secrets.delete(&slot).await?;
        }
        Ok(())
    }

    /// Claims `name` for a create, delete, password reset, deploy or orphan removal (see `db/claims.rs`), waiting at most
    /// [`CLAIM_WAIT`] for one in flight.
    pub(crate) async fn claim_name(&self, name: &str) -> Result<crate::db::Claim, ServiceError> {
        self.db
            .claim(&format!("user:{name}"), CLAIM_WAIT)
            .await
            .ok_or_else(|| {
                ServiceError::FailedPrecondition(format!(
                    "another change of user {name} (create, delete, password reset, deploy, orphan removal) is still running after {} s; try again later",
                    CLAIM_WAIT.as_secs()
                ))
            })
    }

    /// The Forge half of `create_user`, resumable.
    async fn ensure_forge_account(
        &self,
        user_id: UserId,
        name: &str,
        display_name: Option<&str>,
        email: &str,
    ) -> Result<ForgeOutcome, ServiceError> {
        let password_slot = slots::initial_password(user_id);
        let held = self.secrets.get(&password_slot).await?;
        let existing = self.forge.user_exists(name).await?;
        // `created_now`: this call's create_user made the account, so the password we hold is certainly its
        // password (nobody else has ever known it); a refused token request then cannot mean "someone else made
        // the account", and the password must not be thrown away.
        let (forge_user, password, created_now) = match (existing, held) {
            (Some(user), None) => {
                return Ok(ForgeOutcome {
                    forge_user_id: user.id,
                    email: user.email,
                    full_name: user.full_name,
                    forge_created: false,
                    token_set: false,
                    token_note: Some(ADOPTED_NOTE.into()),
                    password: None,
                })
            }
            // An earlier attempt created it with the password we hold.
            (Some(user), Some(password)) => (user, password, false),
            (None, held) => {
                let password = match held {
                    Some(p) => p,
                    None => {
                        let fresh = SecretValue::new(
                            alphanumeric_password(&*self.random, PASSWORD_LEN).as_str(),
                        );
                        // Stored before Forge sees it: a crash after the account exists still leaves us the password.
                        self.secrets.set(&password_slot, fresh.expose()).await?;
                        fresh
                    }
                };
                let new_user = NewForgeUser {
                    username: name,
                    full_name: display_name,
                    email,
                    password: &password,
                };
                match self.forge.create_user(&new_user).await {
                    Ok(user) => (user, password, true),
                    // A timed-out earlier POST may have created it after all: look again.
                    Err(ForgeError::Conflict {
                        reason: ConflictReason::NameTaken,
                        message,
                    }) => match self.forge.user_exists(name).await? {
                        Some(user) => (user, password, false),
                        None => {
                            return Err(ForgeError::Conflict {
                                reason: ConflictReason::NameTaken,
                                message,
                            }
                            .into())
                        }
                    },
                    Err(e) => return Err(e.into()),
                }
            }
        };
        // The account exists from here on, opened by the password we hold: recorded now, so that a later failure
        // (the token mint, the secret store) leaves a pending record that says so, and nobody takes it for
        // "Forge made nothing" and throws away the only password that opens the account.
        let forge_id = forge_user.id;
        self.db
            .write(move |conn| -> Result<(), ServiceError> {
                conn.execute_cached(
                    "UPDATE users SET forge_user_id = ?2, forge_created = 1, initial_password_held = 1 WHERE user_id = ?1",
                    params![user_id, forge_id],
                )?;
                Ok(())
            })
            .await?;
        let name_of_token = token_name(user_id);
        let mut minted = self
            .forge
            .generate_token_for(
                name,
                &password,
                &name_of_token,
                &self.settings.user_token_scopes,
            )
            .await;
        // A token of this name is one an earlier attempt minted and never stored (it crashed in
        // between): its secret is lost, so it is deleted and minted again, leaving no orphan.
        if let Err(ForgeError::Conflict {
            reason: ConflictReason::TokenNameUsed,
            ..
        }) = &minted
        {
            tracing::info!(user_id, username = %name, token = %name_of_token,
                "replacing the token an interrupted create_user minted but did not store");
            self.forge
                .delete_token_for(name, &password, &name_of_token)
                .await?;
            minted = self
                .forge
                .generate_token_for(
                    name,
                    &password,
                    &name_of_token,
                    &self.settings.user_token_scopes,
                )
                .await;
        }
        match minted {
            Ok(token) => {
                self.secrets
                    .set(&slots::forge_token(user_id), token.secret.expose())
                    .await?;
                Ok(ForgeOutcome {
                    forge_user_id: forge_user.id,
                    email: forge_user.email.clone(),
                    full_name: forge_user.full_name.clone(),
                    forge_created: true,
                    token_set: true,
                    token_note: None,
                    password: Some(password),
                })
            }
            // The account this call created refuses its own password for a token: Forge refuses basic
            // authentication (`[service] ENABLE_BASIC_AUTHENTICATION = false`, or a front that blocks it). The
            // account is ours and its password held: the user is complete without a token. Before, this was read
            // as "someone else created it", the only password was deleted and the account recorded as adopted.
            Err(ForgeError::UserCredentialsRejected { status, .. }) if created_now => {
                tracing::warn!(user_id, username = %name, status,
                    "Forge refused the new account's password for a token; user created without one");
                Ok(ForgeOutcome {
                    forge_user_id: forge_user.id,
                    email: forge_user.email.clone(),
                    full_name: forge_user.full_name.clone(),
                    forge_created: true,
                    token_set: false,
                    token_note: Some(format!(
                        "Forge refused the new account's own password for a token (HTTP {status}): basic \
                         authentication may be disabled on Forge; the user can bring their own token \
                         (cockpit/USER_FORGE_TOKEN)"
                    )),
                    password: Some(password),
                })
            }
            // Our password does not open the account: someone else created it in between.
            Err(ForgeError::UserCredentialsRejected { .. }) => {
                self.secrets.delete(&password_slot).await?;
                Ok(ForgeOutcome {
                    forge_user_id: forge_user.id,
                    email: forge_user.email.clone(),
                    full_name: forge_user.full_name.clone(),
                    forge_created: false,
                    token_set: false,
                    token_note: Some(ADOPTED_NOTE.into()),
                    password: None,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_user(&self, user_id: UserId) -> Result<User, ServiceError> {
        self.db
            .call(move |conn| {
                user_by_id(conn, user_id)?.ok_or_else(|| {
                    ServiceError::NotFound(format!("no user with user_id {user_id}"))
                })
            })
            .await
    }

    pub async fn find_user(&self, name: String) -> Result<User, ServiceError> {
        username::validate(&name)?;
        self.db
            .call(move |conn| {
                user_by_name(conn, &name)?
                    .ok_or_else(|| ServiceError::NotFound(format!("no user named {name}")))
            })
            .await
    }

    pub async fn list_users(&self, p: ListUsersParams) -> Result<UsersPage, ServiceError> {
        let limit = p.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ServiceError::InvalidParams(format!(
                "limit must be between 1 and {MAX_PAGE}, got {limit}"
            )));
        }
        if p.cursor.is_some() && p.before.is_some() {
            return Err(ServiceError::InvalidParams(
                "give either cursor (next page) or before (previous page), not both".into(),
            ));
        }
        let after = p.cursor.as_deref().map(decode_cursor).transpose()?;
        let before = p.before.as_deref().map(decode_cursor).transpose()?;
        let prefix = p.filter.unwrap_or_default();
        let expires_before = p.expires_before;
        self.db
            .call(move |conn| -> Result<UsersPage, ServiceError> {
                let end = prefix_end(&prefix);
                let total: i64 = conn
                    .prepare_cached(&format!(
                        "SELECT count(*) FROM users WHERE forge_username >= ?1 AND forge_username < ?2 AND {}",
                        expiring_clause(3)
                    ))?
                    .query_row(params![prefix, end, expires_before], |r| r.get(0))?;
                // Walk from the cursor in the direction asked (backwards for `before`); the page
                // is in name order either way. One row more than the page says whether there is
                // more in the direction of travel; one index probe from the edge we came from
                // answers for the other (none for the first page: nothing is before it).
                let backwards = before.is_some();
                let from = before.clone().or_else(|| after.clone()).unwrap_or_default();
                let (toward, order, away) = if backwards {
                    ("<", "DESC", ">")
                } else {
                    (">", "ASC", "<")
                };
                let mut users = conn
                    .prepare_cached(&format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE forge_username >= ?1 AND forge_username < ?2 \
                         AND forge_username {toward} ?3 AND {} ORDER BY forge_username {order} LIMIT ?4",
                        expiring_clause(5)
                    ))?
                    .query_map(
                        params![prefix, end, from, i64::from(limit) + 1, expires_before],
                        user_from_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let more_ahead = users.len() > limit as usize;
                users.truncate(limit as usize);
                if backwards {
                    users.reverse();
                }
                let came_from = if backwards { users.last() } else { users.first() };
                let more_behind = match came_from {
                    Some(u) if backwards || after.is_some() => conn
                        .prepare_cached(&format!(
                            "SELECT 1 FROM users WHERE forge_username >= ?1 AND forge_username < ?2 \
                             AND forge_username {away} ?3 AND {}",
                            expiring_clause(4)
                        ))?
                        .exists(params![prefix, end, u.forge_username, expires_before])?,
                    _ => false,
                };
                let (more_before, more_after) = if backwards {
                    (more_ahead, more_behind)
                } else {
                    (more_behind, more_ahead)
                };
                let cursor_of = |u: Option<&User>| u.map(|u| encode_cursor(&u.forge_username));
                let prev_cursor = more_before.then(|| cursor_of(users.first())).flatten();
                let next_cursor = more_after.then(|| cursor_of(users.last())).flatten();
                Ok(UsersPage {
                    users,
                    next_cursor,
                    prev_cursor,
                    total: total as u64,
                })
            })
            .await
    }

    /// Forgets a user and their secrets. Refused while the user still has a live VM.
    pub async fn delete_user(
        &self,
        actor: &Actor,
        user_id: UserId,
    ) -> Result<DeleteUserResult, ServiceError> {
        let user = self.get_user(user_id).await?;
        // Not beside a create of the same name (which would find its row gone at the end).
        let _claim = self.claim_name(&user.forge_username).await?;
        let user = self.get_user(user_id).await?;
        // One write for the check and a mark: `provision_vm` takes no name claim, so a deploy racing this delete
        // is stopped by the mark (it refuses a user being deleted), or, if its write came first, this check sees
        // its job and VM. Without it both could succeed and leave a VM whose user no longer exists.
        let blocked = self
            .db
            .write(move |conn| -> Result<Option<VmStatus>, ServiceError> {
                let live_vms: i64 = conn.query_row_cached(
                    "SELECT count(*) FROM vms WHERE user_id = ?1 AND state != 'decommissioned'",
                    [user_id],
                    |r| r.get(0),
                )?;
                let status: VmStatus = conn.query_row_cached(
                    "SELECT vm_status FROM users WHERE user_id = ?1",
                    [user_id],
                    |r| r.get(0),
                )?;
                let busy = crate::provision::store::active_job_of(conn, user_id)?.is_some();
                if live_vms > 0
                    || busy
                    || !matches!(status, VmStatus::NoVm | VmStatus::Decommissioned)
                {
                    return Ok(Some(status));
                }
                conn.execute_cached(
                    "UPDATE users SET setup_state = 'deleting' WHERE user_id = ?1",
                    [user_id],
                )?;
                Ok(None)
            })
            .await?;
        let subject = format!("user:{}", user.forge_username);
        if let Some(status) = blocked {
            let error = ServiceError::FailedPrecondition(format!(
                "user {} still has a VM or a job ({}); decommission it first",
                user.forge_username,
                status.as_str()
            ));
            self.audit(actor, "user.delete", &subject, &error_outcome(&error), None)
                .await?;
            return Err(error);
        }
        self.delete_user_secrets(user_id).await?;
        let now = self.clock.now();
        let actor_owned = actor.clone();
        let subject_owned = subject.clone();
        self.db
            .write(move |conn| -> Result<(), ServiceError> {
                conn.execute_cached("DELETE FROM ssh_keys WHERE user_id = ?1", [user_id])?;
                conn.execute_cached("DELETE FROM users WHERE user_id = ?1", [user_id])?;
                audit::append(
                    conn,
                    now,
                    Entry {
                        actor: &actor_owned,
                        action: "user.delete",
                        subject: &subject_owned,
                        outcome: "ok",
                        detail: Some("deployer record and secrets removed; Forge account kept"),
                    },
                )?;
                Ok(())
            })
            .await?;
        Ok(DeleteUserResult {
            user_id,
            forge_username: user.forge_username,
            forge_user_deleted: false,
        })
    }

    /// Shows the initial password again. Audited, because it is a secret leaving the store.
    pub async fn reveal_initial_password(
        &self,
        actor: &Actor,
        user_id: UserId,
    ) -> Result<RevealPasswordResult, ServiceError> {
        let user = self.get_user(user_id).await?;
        let subject = format!("user:{}", user.forge_username);
        let password = self.secrets.get(&slots::initial_password(user_id)).await?;
        let Some(password) = password.filter(|_| user.initial_password_held) else {
            let error = ServiceError::FailedPrecondition(format!(
                "no initial password is held for {}: {}",
                user.forge_username,
                user.forge_token_note
                    .as_deref()
                    .unwrap_or("it was never generated")
            ));
            self.audit(
                actor,
                "user.reveal_password",
                &subject,
                &error_outcome(&error),
                None,
            )
            .await?;
            return Err(error);
        };
        self.audit(actor, "user.reveal_password", &subject, "ok", None)
            .await?;
        Ok(RevealPasswordResult {
            user_id,
            forge_username: user.forge_username,
            initial_password: password.expose().to_owned(),
        })
    }

    pub async fn list_events(&self, p: ListEventsParams) -> Result<EventsPage, ServiceError> {
        // Refused like list_users' and list_jobs' limits, not silently clamped.
        if let Some(limit) = p.limit.filter(|l| !(1..=MAX_EVENTS_PAGE).contains(l)) {
            return Err(ServiceError::InvalidParams(format!(
                "limit must be between 1 and {MAX_EVENTS_PAGE}, got {limit}"
            )));
        }
        self.db.call(move |conn| Ok(audit::list(conn, &p)?)).await
    }

    /// Appends one audit event.
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        subject: &str,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let line = audit::OwnedEntry {
            actor: actor.clone(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            outcome: outcome.to_owned(),
            detail: detail.map(str::to_owned),
        };
        self.db
            .write(move |conn| -> Result<(), ServiceError> {
                line.append(conn, now)?;
                Ok(())
            })
            .await
    }
}

/// The Forge token name of a user's minted token: fixed per user, so a `create_user` resumed
/// after a crash between minting and storing finds the token it made (Forge refuses the name
/// again) instead of leaving it behind, orphaned, beside a new one.
pub fn token_name(user_id: UserId) -> String {
    format!("hero-deployer-user-{user_id}")
}

/// Why an adopted account has no token.
pub const ADOPTED_NOTE: &str = "the Forge account existed before the deployer saw it, so its password \
    is unknown and no token could be minted; the user can bring their own token (cockpit/USER_FORGE_TOKEN)";

/// `error:<kind>` for the audit log.
pub fn error_outcome(error: &ServiceError) -> String {
    format!("error:{}", error.kind().as_str())
}

#[cfg(test)]
pub(crate) mod tests {
    //! Core tests with an in-memory database, an in-memory secret store and a scripted Forge.
    use std::sync::Arc;

    use hero_secrets::{MemorySecretStore, SecretStore};

    use super::*;
    use crate::clock::{Clock, OsRandom};
    use crate::db::Db;
    use crate::forge::fake::FakeForge;
    use crate::service::CoreSettings;

    struct FixedClock;
    impl Clock for FixedClock {
        fn now(&self) -> i64 {
            1_800_000_000
        }
    }

    /// A core on an in-memory database and secret store, with `forge`.
    pub(crate) fn deployer(forge: Arc<FakeForge>) -> (Deployer, Arc<MemorySecretStore>) {
        let secrets = Arc::new(MemorySecretStore::new());
        let d = Deployer {
            db: Db::open_in_memory().unwrap(),
            secrets: secrets.clone(),
            forge,
            clock: Arc::new(FixedClock),
            random: Arc::new(OsRandom),
            settings: Arc::new(CoreSettings {
                email_domain: "nomail.test".into(),
                user_token_scopes: vec!["read:user".into()],
            }),
        };
        (d, secrets)
    }

    pub(crate) fn params(name: &str) -> CreateUserParams {
        CreateUserParams {
            username: name.into(),
            display_name: None,
            email: None,
            discard_if_refused: false,
        }
    }

    #[tokio::test]
    async fn a_failure_after_the_forge_account_exists_is_resumed_by_a_repeat_call() {
        let forge = Arc::new(FakeForge::new());
        *forge.token_failures_left.lock().unwrap() = 1;
        let (d, secrets) = deployer(forge.clone());
        let actor = Actor::local("test");

        let err = d.create_user(&actor, params("alice")).await.unwrap_err();
        assert_eq!(
            err.kind(),
            hero_os_tfgrid_deployer_sdk::ErrorKind::ForgeUnavailable
        );
        // The account exists on Forge, the password is held, the record is pending, and the
        // audit log says what happened.
        assert_eq!(*forge.creates.lock().unwrap(), 1);
        let pending = d.find_user("alice".into()).await.unwrap();
        assert!(!pending.setup_complete);
        assert!(secrets
            .get(&slots::initial_password(pending.user_id))
            .await
            .unwrap()
            .is_some());
        let events = d.list_events(ListEventsParams::default()).await.unwrap();
        assert_eq!(events.events[0].outcome, "error:forge_unavailable");
        assert!(events.events[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("run create_user again"));

        // The repeat call finishes it without creating a second account.
        let done = d.create_user(&actor, params("alice")).await.unwrap();
        assert_eq!(*forge.creates.lock().unwrap(), 1);
        assert!(done.forge_token_set && !done.adopted);
        assert_eq!(done.user_id, pending.user_id);
        let stored_password = forge.users.lock().unwrap()[0].1.clone();
        assert_eq!(
            done.initial_password.as_deref(),
            Some(stored_password.as_str())
        );
        assert_eq!(
            secrets
                .get(&slots::forge_token(done.user_id))
                .await
                .unwrap()
                .unwrap()
                .expose(),
            "token-for-alice"
        );
        // And now it is a duplicate.
        let err = d.create_user(&actor, params("alice")).await.unwrap_err();
        assert_eq!(
            err.kind(),
            hero_os_tfgrid_deployer_sdk::ErrorKind::AlreadyExists
        );
    }

    /// `discard_if_refused` (a batch line) removes only the record this very call made, and only when Forge
    /// refused the account: a record pending from an earlier call, or one left after Forge was unreachable,
    /// stays with its password.
    #[tokio::test]
    async fn a_refused_create_discards_only_the_record_it_made() {
        let forge = Arc::new(FakeForge::new());
        let (d, secrets) = deployer(forge.clone());
        let actor = Actor::local("test");
        let with = |name: &str, email: &str| CreateUserParams {
            email: Some(email.into()),
            discard_if_refused: true,
            ..params(name)
        };
        d.create_user(&actor, with("alice", "a@x.example"))
            .await
            .unwrap();

        // Refused by Forge (alice's email): nothing is left, not even the password made for it.
        let err = d
            .create_user(&actor, with("mallory", "a@x.example"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ForgeConflict);
        assert_eq!(
            d.find_user("mallory".into()).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let detail = d
            .list_events(ListEventsParams::default())
            .await
            .unwrap()
            .events[0]
            .detail
            .clone()
            .unwrap();
        assert!(
            detail.contains("record this call made was removed"),
            "{detail}"
        );
        assert!(secrets
            .list("deployer/users/")
            .await
            .unwrap()
            .iter()
            .all(|s| s.starts_with("deployer/users/1/")));

        // Forge unreachable: kept pending, password held.
        *forge.token_failures_left.lock().unwrap() = 1;
        let err = d
            .create_user(&actor, with("nora", "n@x.example"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ForgeUnavailable);
        let nora = d.find_user("nora".into()).await.unwrap();
        assert!(!nora.setup_complete);

        // Pending from an earlier call (made without the flag), then refused: kept for a repeat call or `user delete`.
        *forge.token_failures_left.lock().unwrap() = 0;
        d.db.write(move |conn| -> Result<(), ServiceError> {
            conn.execute(
                "INSERT INTO users(forge_username, email, created_at, updated_at) VALUES ('erin', 'a@x.example', 1, 1)",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let err = d
            .create_user(
                &actor,
                CreateUserParams {
                    email: Some("a@x.example".into()),
                    discard_if_refused: true,
                    ..params("erin")
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ForgeConflict, "{err}");
        assert!(!d.find_user("erin".into()).await.unwrap().setup_complete);
        let _ = secrets
            .get(&slots::initial_password(nora.user_id))
            .await
            .unwrap()
            .expect("nora's password is held");
    }

    /// A Forge that refuses basic authentication answers the token request of an account this very call created
    /// with 401: the account is still ours, its password the one we hold. Before, that was read as "someone else
    /// created it", and the only password of the new account was deleted.
    #[tokio::test]
    async fn an_account_we_just_created_keeps_its_password_when_forge_refuses_basic_auth() {
        let forge = Arc::new(FakeForge::new());
        *forge.basic_auth_refused.lock().unwrap() = true;
        let (d, secrets) = deployer(forge.clone());
        let done = d
            .create_user(&Actor::system(), params("dora"))
            .await
            .unwrap();
        assert!(!done.adopted && !done.forge_token_set, "{done:?}");
        assert!(done
            .forge_token_note
            .as_deref()
            .unwrap()
            .contains("basic authentication"));
        let on_forge = forge.users.lock().unwrap()[0].1.clone();
        assert_eq!(done.initial_password.as_deref(), Some(on_forge.as_str()));
        assert_eq!(
            secrets
                .get(&slots::initial_password(done.user_id))
                .await
                .unwrap()
                .unwrap()
                .expose(),
            on_forge
        );
        assert!(done.user.setup_complete);
        let events = d.list_events(ListEventsParams::default()).await.unwrap();
        assert_eq!(
            events.events[0].detail.as_deref(),
            Some("Forge account created; no token")
        );
    }

    #[tokio::test]
    async fn an_account_someone_else_created_in_between_is_adopted_and_our_password_dropped() {
        let forge = Arc::new(FakeForge::new());
        let (d, secrets) = deployer(forge.clone());
        // A pending record holding a password, but the Forge account has another password.
        let first = d
            .create_user(&Actor::system(), params("bob"))
            .await
            .unwrap();
        let id = first.user_id;
        d.db.write(move |c| -> Result<(), ServiceError> {
            c.execute_cached(
                "UPDATE users SET setup_state = 'pending' WHERE user_id = ?1",
                [id],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        forge.users.lock().unwrap()[0].1 = "changed-by-someone".into();
        let again = d
            .create_user(&Actor::system(), params("bob"))
            .await
            .unwrap();
        assert!(again.adopted && !again.forge_token_set);
        assert!(secrets
            .get(&slots::initial_password(id))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn delete_is_refused_while_a_vm_is_live() {
        let forge = Arc::new(FakeForge::new());
        let (d, _) = deployer(forge);
        let u = d
            .create_user(&Actor::system(), params("carol"))
            .await
            .unwrap();
        let id = u.user_id;
        d.db.write(move |c| -> Result<(), ServiceError> {
            c.execute_cached(
                "INSERT INTO vms(user_id, forge_username, backend, name, state, deployer_version, created_at, updated_at) \
                 VALUES (?1, 'carol', 'local', 'vm', 'ready', '0', 0, 0)",
                [id],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let err = d.delete_user(&Actor::system(), id).await.unwrap_err();
        assert_eq!(
            err.kind(),
            hero_os_tfgrid_deployer_sdk::ErrorKind::FailedPrecondition
        );
        assert!(d.get_user(id).await.is_ok());
    }
}
