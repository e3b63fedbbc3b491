//! The health watch: probes every ready VM's public `/health` through its gateway (the URL
//! recorded on the VM row), on an interval with jitter, at most `concurrency` probes at once,
//! each with a deadline, and records what it saw on the VM row (`healthy` / `unreachable` with
//! the error, since when, last seen healthy). A change of verdict is an audit line (actor
//! `system:health`). The world is reached only through the VM agent ([`VmAgent::http_get`]) and
//! the clock; [`HealthWatch::probe_now`] is the "probe now" of `deployer.check_health`, which is
//! also how tests drive it without waiting for the interval; the periodic loop's own test drives
//! it through [`HealthWatch::spawn_with`]. Its cost at 1,000 VMs: `benches/health_watch.rs`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hero_os_tfgrid_deployer_sdk::jobs::{HealthState, VmHealth};
use hero_os_tfgrid_deployer_sdk::types::UserId;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Deserialize;

use crate::audit::{self, Actor, Entry};
use crate::clock::{Clock, Random};
use crate::db::{Cached, Db};
use crate::error::ServiceError;
use crate::provision::agent::VmAgent;

/// The `[health]` section of the server config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between probe rounds; 0 turns the periodic watch off (`check_health` still
    /// probes on demand).
    pub interval_secs: u64,
    /// Up to this many seconds are added at random to each wait, so many servers (or a restart)
    /// do not probe in lockstep.
    pub jitter_secs: u64,
    /// Probes in flight at once.
    pub concurrency: usize,
    /// A probe without an answer within this many milliseconds counts as unreachable.
    pub probe_deadline_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_secs: 60,
            jitter_secs: 10,
            concurrency: 16,
            probe_deadline_ms: 5_000,
        }
    }
}

impl HealthConfig {
    /// Checks values serde cannot; messages say what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("health.concurrency must be at least 1".into());
        }
        if self.probe_deadline_ms == 0 {
            return Err("health.probe_deadline_ms must be at least 1".into());
        }
        // A longer deadline would never apply: the agent gives up on any request first, and
        // the probe would report the agent's timeout instead of this deadline.
        let most = crate::provision::agent::HTTP_TIMEOUT.as_millis();
        if u128::from(self.probe_deadline_ms) > most {
            return Err(format!(
                "health.probe_deadline_ms is {} but a probe's request gives up after {most} ms; use at most {most}",
                self.probe_deadline_ms
            ));
        }
        Ok(())
    }
}

/// Why the health watch could not do its work. Stable codes (`HLT00x`) for logs.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("HLT001: reading the ready VMs failed: {0}")]
    Read(String),
    #[error("HLT002: recording the probe results failed: {0}")]
    Record(String),
    #[error("HLT003: database: {0}")]
    Db(#[from] crate::db::DbError),
}

impl HealthError {
    pub fn code(&self) -> &'static str {
        match self {
            HealthError::Read(_) => "HLT001",
            HealthError::Record(_) => "HLT002",
            HealthError::Db(_) => "HLT003",
        }
    }
}

impl From<HealthError> for ServiceError {
    fn from(e: HealthError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

/// Reads the health columns of a VM row starting at column `first` (`health_state`,
/// `health_since`, `health_checked_at`, `last_healthy_at`, `health_error`).
pub fn health_from_row(r: &Row<'_>, first: usize) -> rusqlite::Result<Option<VmHealth>> {
    let Some(state) = r.get::<_, Option<HealthState>>(first)? else {
        return Ok(None);
    };
    Ok(Some(VmHealth {
        state,
        since: r.get::<_, Option<i64>>(first + 1)?.unwrap_or(0),
        checked_at: r.get::<_, Option<i64>>(first + 2)?.unwrap_or(0),
        last_healthy_at: r.get(first + 3)?,
        last_error: r.get(first + 4)?,
    }))
}

/// A ready VM to probe.
#[derive(Debug, Clone)]
struct Target {
    vm_id: i64,
    forge_username: String,
    url: String,
}

/// What one probe saw, and when it was sent (what a VM answered at a time: a probe sent
/// earlier is older news, however late it ends).
#[derive(Debug, Clone)]
struct Verdict {
    target: Target,
    /// `None`: healthy; else why not.
    error: Option<String>,
    checked_at: i64,
}

/// What a round did: how many VMs were probed and which changed their verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub probed: usize,
    pub unreachable: usize,
    /// `(username, new state)` of every VM whose verdict changed.
    pub transitions: Vec<(String, HealthState)>,
}

/// How the periodic loop waits between rounds. The server uses [`TokioSleeper`]. A seam for the
/// loop's test: tokio's paused clock cannot drive this loop reliably, because the sqlite writer
/// is a plain thread — while a round waits for its write the runtime looks idle and jumps the
/// paused clock to the next timer (the test's own guard included). An injected sleeper sees each
/// wait the loop asks for (so the jitter bound is checked on the value itself) and returns when
/// the test lets it, which also tells the test that the previous round has been recorded.
#[async_trait::async_trait]
pub trait Sleeper: Send + Sync {
    async fn sleep(&self, wait: Duration);
}

/// The real wait: tokio's timer.
pub struct TokioSleeper;

#[async_trait::async_trait]
impl Sleeper for TokioSleeper {
    async fn sleep(&self, wait: Duration) {
        tokio::time::sleep(wait).await;
    }
}

/// The watch. Cheap to share (`Arc`).
pub struct HealthWatch {
    db: Db,
    agent: Arc<dyn VmAgent>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    cfg: HealthConfig,
    health_path: String,
    /// `concurrency` permits shared by every round: rounds may overlap (a `vm check` does not wait for a
    /// periodic round), but the probes in flight never exceed `concurrency` — before, each caller of
    /// `check_health` added a full round of its own.
    probes: tokio::sync::Semaphore,
}

impl HealthWatch {
    pub fn new(
        db: Db,
        agent: Arc<dyn VmAgent>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        cfg: HealthConfig,
        health_path: String,
    ) -> HealthWatch {
        HealthWatch {
            db,
            agent,
            clock,
            random,
            probes: tokio::sync::Semaphore::new(cfg.concurrency.max(1)),
            cfg,
            health_path,
        }
    }

    /// Runs rounds every `interval_secs` (+ jitter) until aborted; `None` when the interval is 0.
    /// Each wait starts when the previous round ended, so a slow round delays the next one
    /// rather than overlapping it. The first round comes after the jitter alone: after a restart
    /// the operator sees fresh verdicts within seconds, not one whole interval later, and
    /// deployers restarted together still do not probe in step.
    pub fn spawn(self: Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.spawn_with(Arc::new(TokioSleeper))
    }

    /// [`HealthWatch::spawn`] with the wait between rounds injected: the seam that lets a test
    /// run the periodic loop itself round by round (see [`Sleeper`]).
    pub fn spawn_with(
        self: Arc<Self>,
        sleeper: Arc<dyn Sleeper>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.cfg.interval_secs == 0 {
            return None;
        }
        Some(tokio::spawn(async move {
            let mut wait = self.jitter();
            loop {
                sleeper.sleep(wait).await;
                wait = Duration::from_secs(self.cfg.interval_secs) + self.jitter();
                match self.probe_now(None).await {
                    Ok(round) => tracing::debug!(
                        probed = round.probed,
                        unreachable = round.unreachable,
                        changed = round.transitions.len(),
                        "health round"
                    ),
                    Err(e) => tracing::warn!(code = e.code(), error = %e, "health round failed"),
                }
            }
        }))
    }

    /// A random extra wait below `jitter_secs`.
    fn jitter(&self) -> Duration {
        let jitter_ms = self.cfg.jitter_secs.saturating_mul(1000);
        let extra = if jitter_ms == 0 {
            0
        } else {
            u64::from(
                self.random
                    .below(u32::try_from(jitter_ms).unwrap_or(u32::MAX)),
            )
        };
        Duration::from_millis(extra)
    }

    /// One round now: probes every ready VM (or only `user`'s), records the verdicts in one
    /// write with an audit line per change. Rounds may overlap — a `vm check alice` does not
    /// wait for a periodic round stuck on silent VMs — because [`record`] decides each change
    /// against the row as it is in the write, and drops a verdict older than the one recorded.
    pub async fn probe_now(&self, user: Option<UserId>) -> Result<Round, HealthError> {
        let targets = self.db.call(move |conn| ready_targets(conn, user)).await?;
        let deadline = Duration::from_millis(self.cfg.probe_deadline_ms);
        let verdicts: Vec<Verdict> = futures::stream::iter(targets)
            .map(|target| async move {
                // Never closed, so the permit always comes; held for the probe.
                let _permit = self.probes.acquire().await.ok();
                self.probe(target, deadline).await
            })
            .buffer_unordered(self.cfg.concurrency)
            .collect()
            .await;
        let probed = verdicts.len();
        let unreachable = verdicts.iter().filter(|v| v.error.is_some()).count();
        let transitions = self.db.write(move |conn| record(conn, &verdicts)).await?;
        let round = Round {
            probed,
            unreachable,
            transitions,
        };
        for (user, state) in &round.transitions {
            tracing::info!(user = %user, health = state.as_str(), "VM health changed");
        }
        Ok(round)
    }

    async fn probe(&self, target: Target, deadline: Duration) -> Verdict {
        let checked_at = self.clock.now();
        let url = format!(
            "{}/{}",
            target.url.trim_end_matches('/'),
            self.health_path.trim_start_matches('/')
        );
        let connect = loopback_connect_addr(&target.url);
        let answer =
            tokio::time::timeout(deadline, self.agent.http_get(&url, connect.as_deref())).await;
        let error = match answer {
            Ok(Ok(a)) if a.status == 200 => None,
            Ok(Ok(a)) => Some(format!("GET {url}: HTTP {}", a.status)),
            Ok(Err(e)) => Some(format!("{}: {}", e.code, e.message)),
            Err(_) => Some(format!(
                "GET {url}: no answer within {} ms",
                deadline.as_millis()
            )),
        };
        Verdict {
            target,
            error,
            checked_at,
        }
    }
}

fn state_of(v: &Verdict) -> HealthState {
    if v.error.is_some() {
        HealthState::Unreachable
    } else {
        HealthState::Healthy
    }
}

/// RFC 6761: a `*.localhost` name is the loopback interface (the local backend's gateway URLs,
/// `http://<user>.localhost:<port>/`). Any other host is resolved as usual.
fn loopback_connect_addr(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    if host == "localhost" || host.ends_with(".localhost") {
        let port = parsed.port_or_known_default()?;
        return Some(format!("127.0.0.1:{port}"));
    }
    None
}

fn ready_targets(conn: &Connection, user: Option<UserId>) -> Result<Vec<Target>, HealthError> {
    let read = || -> rusqlite::Result<Vec<Target>> {
        conn.prepare_cached(
            "SELECT vm_id, forge_username, url FROM vms \
             WHERE state = 'ready' AND url IS NOT NULL AND (?1 IS NULL OR user_id = ?1) ORDER BY vm_id",
        )?
        .query_map([user], |r| {
            Ok(Target {
                vm_id: r.get(0)?,
                forge_username: r.get(1)?,
                url: r.get(2)?,
            })
        })?
        .collect()
    };
    read().map_err(|e| HealthError::Read(e.to_string()))
}

/// Records the verdicts in the caller's write and returns the changes (user, new state), each
/// with its audit line. The previous state is read here, in the write, not when the round
/// began: two overlapping rounds then agree on what changed, and a transition is audited once.
/// A verdict older than the one already recorded (a slow round finishing after a quick `vm
/// check`) is dropped rather than undoing the newer one; a VM no longer ready keeps its end.
/// "Older" by more than [`CLOCK_STEP_SECS`] is not a slow round but the wall clock stepped back,
/// and that verdict is taken: dropped, every verdict until the clock caught up was lost, and a VM
/// that went down meanwhile read healthy.
fn record(
    conn: &Connection,
    verdicts: &[Verdict],
) -> Result<Vec<(String, HealthState)>, HealthError> {
    let write = || -> rusqlite::Result<Vec<(String, HealthState)>> {
        let actor = Actor("system:health".into());
        let mut transitions = Vec::new();
        for v in verdicts {
            let state = state_of(v);
            let now = v.checked_at;
            let previous: Option<Option<HealthState>> = conn
                .prepare_cached(
                    "SELECT health_state FROM vms WHERE vm_id = ?1 AND state = 'ready' \
                     AND (health_checked_at IS NULL OR health_checked_at <= ?2 \
                          OR health_checked_at > ?2 + ?3)",
                )?
                .query_row(params![v.target.vm_id, now, CLOCK_STEP_SECS], |r| r.get(0))
                .optional()?;
            let Some(previous) = previous else { continue };
            conn.execute_cached(
                "UPDATE vms SET \
                 health_since = CASE WHEN health_state IS ?2 THEN health_since ELSE ?3 END, \
                 health_state = ?2, health_checked_at = ?3, \
                 last_healthy_at = CASE WHEN ?2 = 'healthy' THEN ?3 ELSE last_healthy_at END, \
                 health_error = ?4 \
                 WHERE vm_id = ?1",
                params![v.target.vm_id, state, now, v.error],
            )?;
            // A first verdict of healthy is what "ready" promised: not news. Any other change is.
            let changed = match previous {
                None => state == HealthState::Unreachable,
                Some(prev) => prev != state,
            };
            if changed {
                let detail = match &v.error {
                    Some(e) => format!("{} → unreachable: {e}", prev_name(previous)),
                    None => format!("{} → healthy", prev_name(previous)),
                };
                audit::append(
                    conn,
                    now,
                    Entry {
                        actor: &actor,
                        action: "vm.health",
                        subject: &format!("user:{}", v.target.forge_username),
                        outcome: state.as_str(),
                        detail: Some(&detail),
                    },
                )?;
                transitions.push((v.target.forge_username.clone(), state));
            }
        }
        Ok(transitions)
    };
    write().map_err(|e| HealthError::Record(e.to_string()))
}

/// How much older than the recorded verdict a new one may be and still be a slow round's (no probe
/// lasts this long); older still, the clock stepped back ([`record`]).
const CLOCK_STEP_SECS: i64 = 600;

fn prev_name(prev: Option<HealthState>) -> &'static str {
    prev.map(HealthState::as_str).unwrap_or("not probed")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn localhost_names_connect_to_the_loopback() {
        assert_eq!(
            loopback_connect_addr("http://alice.localhost:8088/").as_deref(),
            Some("127.0.0.1:8088")
        );
        assert_eq!(loopback_connect_addr("https://alice.gent01.grid.tf/"), None);
    }

    #[test]
    fn config_refuses_zero_concurrency_and_deadline() {
        let mut c = HealthConfig::default();
        assert!(c.validate().is_ok());
        c.concurrency = 0;
        assert!(c.validate().unwrap_err().contains("concurrency"));
        c = HealthConfig {
            probe_deadline_ms: 0,
            ..HealthConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("probe_deadline_ms"));
        // Up to the agent's own request timeout, and not a millisecond beyond it.
        c.probe_deadline_ms = 10_000;
        assert!(c.validate().is_ok());
        c.probe_deadline_ms = 10_001;
        let err = c.validate().unwrap_err();
        assert!(err.contains("at most 10000"), "{err}");
    }
}
