//! Which OAuth apps on Forge are this deployer's: the ids it recorded when it made them
//! (`oauth_apps`, migration 0010). An app's name (`hero_os_tfgrid_deployer hero_u<id>_<name>`)
//! says which VM it serves, never whose it is: a second deployer on the same Forge admin account
//! makes apps of the same names. So `register_sso`, decommission and `reconcile` only adopt,
//! rotate or delete an app whose id is recorded here.
//!
//! An app is recorded in the write right after Forge made it. A crash between the two leaves an
//! app nobody holds a secret of, which no one adopts or deletes (the next attempt makes another):
//! clutter on the admin account, never a way in.

use std::collections::{BTreeMap, BTreeSet};

use hero_os_tfgrid_deployer_sdk::types::UserId;
use rusqlite::{params, Connection};

use crate::db::Cached;
use crate::error::ServiceError;
use crate::service::Deployer;

/// The record, as the steps and reconcile use it: each call one read or one write.
impl Deployer {
    /// Records `app_id` as this deployer's app for `user_id` (right after Forge made it).
    pub async fn record_oauth_app(&self, app_id: i64, user_id: UserId) -> Result<(), ServiceError> {
        let now = self.clock.now();
        self.db
            .write(move |conn| -> Result<_, ServiceError> {
                Ok(record(conn, app_id, user_id, now)?)
            })
            .await
    }

    /// Forgets `app_ids` (after Forge deleted them, or found them gone).
    pub async fn forget_oauth_apps(&self, app_ids: Vec<i64>) -> Result<(), ServiceError> {
        self.db
            .write(move |conn| -> Result<_, ServiceError> {
                for id in app_ids {
                    forget(conn, id)?;
                }
                Ok(())
            })
            .await
    }

    /// The ids of the apps this deployer made for `user_id`.
    pub async fn oauth_apps_of(&self, user_id: UserId) -> Result<BTreeSet<i64>, ServiceError> {
        self.db
            .call(move |conn| -> Result<_, ServiceError> { Ok(of_user(conn, user_id)?) })
            .await
    }

    /// Every app this deployer made: app id → user id.
    pub async fn all_oauth_apps(&self) -> Result<BTreeMap<i64, UserId>, ServiceError> {
        self.db
            .call(|conn| -> Result<_, ServiceError> { Ok(all(conn)?) })
            .await
    }
}

fn record(conn: &Connection, app_id: i64, user_id: UserId, now: i64) -> rusqlite::Result<()> {
    conn.execute_cached(
        "INSERT OR REPLACE INTO oauth_apps(app_id, user_id, created_at) VALUES (?1, ?2, ?3)",
        params![app_id, user_id, now],
    )?;
    Ok(())
}

fn forget(conn: &Connection, app_id: i64) -> rusqlite::Result<()> {
    conn.execute_cached("DELETE FROM oauth_apps WHERE app_id = ?1", [app_id])?;
    Ok(())
}

fn of_user(conn: &Connection, user_id: UserId) -> rusqlite::Result<BTreeSet<i64>> {
    conn.prepare_cached("SELECT app_id FROM oauth_apps WHERE user_id = ?1")?
        .query_map([user_id], |r| r.get(0))?
        .collect()
}

fn all(conn: &Connection) -> rusqlite::Result<BTreeMap<i64, UserId>> {
    conn.prepare_cached("SELECT app_id, user_id FROM oauth_apps")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}
