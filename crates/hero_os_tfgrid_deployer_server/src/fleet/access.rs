//! Who may open a ready VM, kept in step with the deployer. A VM's SSO edge reads its admin list
//! from its own secret store, which `configure_sso` fills at deploy, repair and redeploy; the job
//! that did it records on the VM row what it wrote (`vms.admins_pushed`). Without this sweep a
//! name taken off the deployer's list (`secret set deployer/ADMIN_FORGE_USERS …`) went on opening
//! every VM deployed while it was on it, until someone repaired each one.
//!
//! Every `interval_secs` (and once at start) the sweep reads the list the deployer holds and
//! starts a `sync_access` job (`configure_sso` alone) for each ready VM whose recorded list
//! differs. A VM with a job already running is left for the next sweep, and so is one whose last
//! sync failed less than `retry_failed_secs` ago, so an unreachable VM costs one job per retry
//! period, not one per sweep.

use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::types::UserId;
use rusqlite::{params, Connection};
use serde::Deserialize;

use crate::audit::Actor;
use crate::error::ServiceError;
use crate::provision::steps::configure_sso::admins_value;
use crate::provision::Provisioner;

/// The audit actor of the jobs the sweep starts.
pub const ACTOR: &str = "system:access";

/// The `[provision.access]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Seconds between sweeps: the longest a changed admin list waits before its VMs' syncs
    /// start.
    pub interval_secs: u64,
    /// A VM whose last `sync_access` job failed gets the next one this many seconds later.
    pub retry_failed_secs: u64,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            interval_secs: 30,
            retry_failed_secs: 600,
        }
    }
}

impl AccessConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_secs == 0 {
            return Err("provision.access.interval_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// Runs a sweep now, then one every `interval_secs`.
pub fn spawn(p: Provisioner) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(p.access_config().interval_secs);
        loop {
            match sweep(&p).await {
                Ok(started) if started.is_empty() => {}
                Ok(started) => tracing::info!(users = ?started, "admin list changed: syncing VMs"),
                Err(e) => tracing::warn!(error = %e, "access sweep failed"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// One sweep: a `sync_access` job for every ready VM whose recorded admin list is not the one
/// the deployer holds now; returns the users whose job it started.
pub async fn sweep(p: &Provisioner) -> Result<Vec<String>, ServiceError> {
    let (wanted, _) = admins_value(p.deployer().secrets.as_ref()).await?;
    let retry_ms = i64::try_from(p.access_config().retry_failed_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let failed_since = p.deployer().clock.now_ms().saturating_sub(retry_ms);
    let stale = p
        .deployer()
        .db
        .call(move |conn| -> Result<_, ServiceError> {
            Ok(stale_vms(conn, &wanted, failed_since)?)
        })
        .await?;
    let actor = Actor(ACTOR.into());
    let mut started = Vec::new();
    for (user_id, user) in stale {
        match p.sync_access(&actor, user_id).await {
            Ok(job) => {
                tracing::info!(user = %user, job_id = job.job_id, "syncing who may open the VM");
                started.push(user);
            }
            // Busy (a repair, a decommission): the next sweep looks again. A repair that
            // succeeds records what it wrote, and then there is nothing left to sync.
            Err(ServiceError::JobConflict { .. }) => {}
            Err(e) => tracing::warn!(user = %user, error = %e, "access sync refused"),
        }
    }
    Ok(started)
}

/// The ready VMs (user id, username) that were given another admin list than `wanted` (or none
/// recorded) and whose last sync did not fail after `failed_since_ms`: what a sweep syncs.
pub fn stale_vms(
    conn: &Connection,
    wanted: &str,
    failed_since_ms: i64,
) -> rusqlite::Result<Vec<(UserId, String)>> {
    conn.prepare_cached(
        "SELECT v.user_id, v.forge_username FROM vms v WHERE v.state = 'ready' \
         AND v.admins_pushed IS NOT ?1 \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.user_id = v.user_id \
           AND j.kind = 'sync_access' AND j.state = 'failed' AND j.finished_at_ms > ?2) \
         ORDER BY v.user_id",
    )?
    .query_map(params![wanted, failed_since_ms], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?
    .collect()
}

impl Provisioner {
    pub(crate) fn access_config(&self) -> &AccessConfig {
        &self.inner.cfg.access
    }
}
