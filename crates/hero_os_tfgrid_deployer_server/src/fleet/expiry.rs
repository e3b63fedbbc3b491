//! Expiry: every VM may have an expiry (`vms.expires_at`; `NULL`: never), set at deploy from
//! `expiry.default_days` or the call's `expires_in_days`, moved by `deployer.extend_vm`. The
//! sweep (at start, so a server that was down at expiry time catches up, then every
//! `check_interval_secs`) warns once per expiry in the audit log (`vm.expiry_warning`)
//! `warn_before_hours` ahead (moving a late one's expiry to the full notice), and decommissions an expired, warned,
//! ready VM as a normal decommission job
//! whose actor is `system:expiry`. Time comes from the core's clock only.

use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::jobs::{ExtendVmParams, VmRecord, MAX_EXTEND_DAYS};
use hero_os_tfgrid_deployer_sdk::types::UserId;
use rusqlite::params;
use serde::Deserialize;

use crate::audit::{self, Actor, Entry};
use crate::db::Cached;
use crate::error::ServiceError;
use crate::provision::states::VmState;
use crate::provision::{vms, Provisioner};

/// The actor of everything the expiry sweep does.
pub const ACTOR: &str = "system:expiry";

const DAY: i64 = 86_400;

/// The `[provision.expiry]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    /// Days a new VM lives when the deploy does not say; 0: never expires.
    pub default_days: u32,
    /// How long before the expiry the warning is written.
    pub warn_before_hours: u32,
    /// Seconds between sweeps (one always runs at start).
    pub check_interval_secs: u64,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            default_days: 30,
            warn_before_hours: 48,
            check_interval_secs: 300,
        }
    }
}

impl ExpiryConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.check_interval_secs == 0 {
            return Err("provision.expiry.check_interval_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// The expiry of a VM deployed at `now` for `days` (0: never).
pub fn expires_at(now: i64, days: u32) -> Option<i64> {
    (days > 0).then(|| now.saturating_add(i64::from(days) * DAY))
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Users warned now.
    pub warned: Vec<String>,
    /// Users whose decommission job was started now.
    pub decommissioned: Vec<String>,
}

/// Runs a sweep now (the catch-up of a start), then one every `check_interval_secs`.
pub fn spawn(p: Provisioner) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(p.expiry_config().check_interval_secs);
        loop {
            match sweep(&p).await {
                Ok(s) if s.warned.is_empty() && s.decommissioned.is_empty() => {}
                Ok(s) => tracing::info!(
                    warned = ?s.warned,
                    decommissioned = ?s.decommissioned,
                    "expiry sweep"
                ),
                Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// One sweep: warnings for VMs expiring within `warn_before_hours`, decommission jobs for
/// expired ready VMs that were warned (a user with an active job is left for the next sweep).
///
/// Nobody loses a VM without the full notice: a warning that comes late — the server was down through the
/// warning window, or the clock jumped forward — moves the expiry to `warn_before_hours` from now (saying so),
/// and only a warned VM is decommissioned. Before, the first sweep after such a gap decommissioned every VM in
/// it unwarned.
pub async fn sweep(p: &Provisioner) -> Result<Sweep, ServiceError> {
    let now = p.deployer().clock.now();
    let notice = i64::from(p.expiry_config().warn_before_hours) * 3600;
    let warn_until = now.saturating_add(notice);
    // A warning within one sweep interval of its time is on time (sweeps are that far apart).
    let slack = i64::try_from(p.expiry_config().check_interval_secs).unwrap_or(i64::MAX);
    let actor = Actor(ACTOR.into());
    let warned = p
        .deployer()
        .db
        .write(move |conn| -> Result<Vec<String>, ServiceError> {
            let due: Vec<(i64, String, i64)> = conn
                .prepare_cached(
                    "SELECT vm_id, forge_username, expires_at FROM vms WHERE state = 'ready' \
                     AND expires_at IS NOT NULL AND expires_at <= ?1 \
                     AND expiry_warned_at IS NULL ORDER BY expires_at",
                )?
                .query_map(params![warn_until], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let actor = Actor(ACTOR.into());
            let mut warned = Vec::new();
            for (vm_id, user, planned) in due {
                let late = planned.saturating_add(slack) < warn_until;
                let at = if late { warn_until } else { planned };
                conn.execute_cached(
                    "UPDATE vms SET expiry_warned_at = ?2, expires_at = ?3 WHERE vm_id = ?1",
                    params![vm_id, now, at],
                )?;
                let hours = (at - now + 3599) / 3600;
                let moved = if late {
                    format!(" (moved from {planned}: the warning could not be given in time)")
                } else {
                    String::new()
                };
                audit::append(
                    conn,
                    now,
                    Entry {
                        actor: &actor,
                        action: "vm.expiry_warning",
                        subject: &format!("user:{user}"),
                        outcome: "warned",
                        detail: Some(&format!(
                            "the VM expires at {at}{moved} (in about {hours} h) and is then decommissioned; `vm extend {user} --days N` keeps it"
                        )),
                    },
                )?;
                warned.push(user);
            }
            Ok(warned)
        })
        .await?;
    let expired: Vec<(UserId, String)> = p
        .deployer()
        .db
        .call(move |conn| -> Result<_, ServiceError> {
            Ok(conn
                .prepare_cached(
                    "SELECT user_id, forge_username FROM vms WHERE state = 'ready' \
                     AND expires_at IS NOT NULL AND expires_at <= ?1 \
                     AND expiry_warned_at IS NOT NULL ORDER BY expires_at",
                )?
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await?;
    let mut decommissioned = Vec::new();
    for (user_id, user) in expired {
        // Checked again in the write that starts the job: an extend since the read above wins.
        match p.decommission_expired(&actor, user_id, now).await {
            Ok(Some(job)) => {
                tracing::info!(user = %user, job_id = job.job_id, "expired VM: decommissioning");
                decommissioned.push(user);
            }
            Ok(None) => tracing::info!(user = %user, "VM extended since the sweep read it: kept"),
            // Busy (a repair, a decommission already running): the next sweep looks again.
            Err(ServiceError::JobConflict { .. }) => {}
            Err(e) => tracing::warn!(user = %user, error = %e, "expired VM: decommission refused"),
        }
    }
    Ok(Sweep {
        warned,
        decommissioned,
    })
}

impl Provisioner {
    pub(crate) fn expiry_config(&self) -> &ExpiryConfig {
        &self.inner.cfg.expiry
    }

    /// `deployer.extend_vm`: `days` later (from now when the expiry already passed), or never;
    /// the warning is due again for the new time. Audited.
    pub async fn extend_vm(
        &self,
        actor: &Actor,
        p: ExtendVmParams,
    ) -> Result<VmRecord, ServiceError> {
        let days = match (p.days, p.never) {
            (Some(0), _) | (None, false) | (Some(_), true) => {
                return Err(ServiceError::InvalidParams(
                    "give either days (at least 1) or never".into(),
                ))
            }
            (Some(d), false) if d > MAX_EXTEND_DAYS => {
                return Err(ServiceError::InvalidParams(format!(
                    "extend by {d} days: at most {MAX_EXTEND_DAYS} (ten years) at a time"
                )))
            }
            (Some(d), false) => Some(d),
            (None, true) => None,
        };
        let user = self.deployer().get_user(p.user_id).await?;
        let now = self.deployer().clock.now();
        let actor = actor.clone();
        let user_id = p.user_id;
        self.deployer()
            .db
            .write(move |conn| -> Result<VmRecord, ServiceError> {
                let vm = vms::live_vm(conn, user_id)?
                    .filter(|vm| vm.state != VmState::Decommissioning.as_str())
                    .ok_or_else(|| {
                        ServiceError::FailedPrecondition(format!(
                            "user {} has no live VM to extend",
                            user.forge_username
                        ))
                    })?;
                let new = days.map(|d| {
                    vm.expires_at
                        .unwrap_or(now)
                        .max(now)
                        .saturating_add(i64::from(d) * DAY)
                });
                conn.execute_cached(
                    "UPDATE vms SET expires_at = ?2, expiry_warned_at = NULL WHERE vm_id = ?1",
                    params![vm.vm_id, new],
                )?;
                let detail = match new {
                    Some(at) => format!("VM {} now expires at {at}", vm.name),
                    None => format!("VM {} never expires", vm.name),
                };
                audit::append(
                    conn,
                    now,
                    Entry {
                        actor: &actor,
                        action: "vm.extend",
                        subject: &format!("user:{}", user.forge_username),
                        outcome: "ok",
                        detail: Some(&detail),
                    },
                )?;
                vms::vm_by_id(conn, vm.vm_id)?
                    .ok_or_else(|| ServiceError::Internal("the VM row vanished".into()))
            })
            .await
    }
}

/// Test builds: the wall clock moved by the seconds in `file` (read at every reading), the
/// controlled clock of the expiry tests. Other builds never build it (the config refuses the
/// file).
#[cfg(feature = "test-hooks")]
pub struct OffsetClock {
    pub inner: std::sync::Arc<dyn crate::clock::Clock>,
    pub file: std::path::PathBuf,
}

#[cfg(feature = "test-hooks")]
impl OffsetClock {
    fn offset(&self) -> i64 {
        std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[cfg(feature = "test-hooks")]
impl crate::clock::Clock for OffsetClock {
    fn now(&self) -> i64 {
        self.inner.now().saturating_add(self.offset())
    }

    fn now_ms(&self) -> i64 {
        self.inner
            .now_ms()
            .saturating_add(self.offset().saturating_mul(1000))
    }
}

/// The server's clock: `clock`, moved by the test clock file in test builds that name one.
pub fn server_clock(
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    cfg: &crate::provision::config::ProvisionConfig,
) -> std::sync::Arc<dyn crate::clock::Clock> {
    #[cfg(feature = "test-hooks")]
    if let Some(file) = &cfg.test_clock_offset_file {
        return std::sync::Arc::new(OffsetClock {
            inner: clock,
            file: file.clone(),
        });
    }
    let _ = cfg;
    clock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_days_is_never() {
        assert_eq!(expires_at(100, 0), None);
        assert_eq!(expires_at(100, 2), Some(100 + 2 * DAY));
    }
}
