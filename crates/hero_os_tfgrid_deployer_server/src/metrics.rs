//! `GET /metrics`: the deployer in the OpenMetrics text format Prometheus scrapes, written by the
//! Prometheus project's Rust client (`prometheus-client`), never formatted by hand.
//!
//! Two kinds of figures:
//! - **State**, computed from sqlite at scrape time (jobs by kind and state, VMs by state, users
//!   by setup state): always true after a restart, costs one grouped read per scrape, and needs
//!   no bookkeeping beside the writes that already happen.
//! - **Events**, counted where they happen (step durations, retries, failures by error code,
//!   Forge and backend call errors): process-lifetime counters, as Prometheus expects (a restart
//!   resets them and `rate()` copes). Producers see only [`MetricsSink`], so the core does not
//!   depend on the Prometheus types and tests can pass [`NoMetrics`].
//!
//! Every label value that is not a state read from sqlite is a `&'static str` (kinds, steps,
//! operations) or a stable error code passed through [`code_label`] (which keeps only code-shaped
//! strings): a username, a URL or an error message can never become a label, which keeps both the
//! cardinality bounded and personal data out of a scrape that sits behind the SSO edge on the TCP
//! listener.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::db::{Db, DbError};

/// What the provisioning side, the Forge client and the backends report as it happens. The
/// server's [`Metrics`] counts it; [`NoMetrics`] ignores it.
pub trait MetricsSink: Send + Sync {
    /// A step of a job of `kind` finished successfully after `took` (its last attempt).
    fn step_finished(&self, kind: &'static str, step: &'static str, took: Duration);
    /// A step is being tried again (after a transient error, or on a job retry).
    fn step_retried(&self, kind: &'static str, step: &'static str);
    /// A step failed for good with the stable error `code`.
    fn step_failed(&self, kind: &'static str, step: &'static str, code: &str);
    /// A Forge API call (`operation`, e.g. `create_user`) ended in an error with `code`.
    fn forge_call_failed(&self, operation: &'static str, code: &str);
    /// A compute backend call ended in an error with `code`.
    fn backend_call_failed(&self, backend: &'static str, operation: &'static str, code: &str);
    /// The job event channels now held in memory (one per job that runs or is followed).
    fn event_channels(&self, _open: usize) {}
}

/// An error code as a label value: stable codes are short ASCII identifiers (`FRG006_conflict`,
/// `backend.unavailable`, `step.deadline`); anything else (a message passed by mistake) is
/// exported as `other` rather than becoming a label of its own.
pub fn code_label(code: &str) -> String {
    let shaped = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if shaped {
        code.to_owned()
    } else {
        "other".to_owned()
    }
}

/// A sink that drops everything, for tests and tools that do not export metrics.
pub struct NoMetrics;

impl MetricsSink for NoMetrics {
    fn step_finished(&self, _: &'static str, _: &'static str, _: Duration) {}
    fn step_retried(&self, _: &'static str, _: &'static str) {}
    fn step_failed(&self, _: &'static str, _: &'static str, _: &str) {}
    fn forge_call_failed(&self, _: &'static str, _: &str) {}
    fn backend_call_failed(&self, _: &'static str, _: &'static str, _: &str) {}
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: &'static str,
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepFailureLabels {
    kind: &'static str,
    step: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForgeLabels {
    operation: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
    operation: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Upper bounds of the step duration buckets, in seconds: steps range from a lookup that finishes
/// at once to a grid deployment or bootstrap that may take half an hour (their deadlines are
/// 60–1,800 s).
const STEP_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0,
];

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

/// Job kinds and states, VM states and users' setup states that are always exported (as 0 when
/// none exist), so a dashboard can tell "none" from "not exported". States found in sqlite
/// beyond these are exported too.
const JOB_KINDS: [&str; 5] = [
    "provision",
    "decommission",
    "repair",
    "redeploy",
    "sync_access",
];
/// The health watch's verdicts of ready VMs; `unknown`: not probed yet.
const HEALTH_STATES: [&str; 3] = ["healthy", "unreachable", "unknown"];
const JOB_STATES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelling",
    "cancelled",
];
const VM_STATES: [&str; 5] = [
    "deploying",
    "ready",
    "failed",
    "decommissioning",
    "decommissioned",
];
const SETUP_STATES: [&str; 2] = ["pending", "active"];

/// The server's counters. Cheap to clone (the families share their storage).
#[derive(Clone)]
pub struct Metrics {
    step_seconds: HistogramFamily<StepLabels>,
    step_retries: Family<StepLabels, Counter>,
    step_failures: Family<StepFailureLabels, Counter>,
    forge_errors: Family<ForgeLabels, Counter>,
    backend_errors: Family<BackendLabels, Counter>,
    event_channels: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            step_seconds: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            step_retries: Family::default(),
            step_failures: Family::default(),
            forge_errors: Family::default(),
            backend_errors: Family::default(),
            event_channels: Gauge::default(),
        }
    }

    /// The exposition: sqlite state read now, plus the counters. Errors only when sqlite does.
    pub async fn render(&self, db: &Db) -> Result<String, DbError> {
        let snapshot = db.call(Snapshot::read).await?;
        let mut registry = Registry::with_prefix("hero_deployer");
        registry.register(
            "jobs",
            "Provisioning jobs by kind and state (from the database)",
            snapshot.jobs,
        );
        registry.register(
            "vms",
            "VM records by state (from the database; decommissioned ones are kept for audit)",
            snapshot.vms,
        );
        registry.register(
            "vm_health",
            "Ready VMs by the health watch's last verdict (from the database; unknown: not probed yet)",
            snapshot.vm_health,
        );
        registry.register(
            "users",
            "Users by setup state (from the database)",
            snapshot.users,
        );
        registry.register(
            "step_duration_seconds",
            "Wall time of successful job steps, by job kind and step",
            self.step_seconds.clone(),
        );
        registry.register(
            "step_retries",
            "Job steps tried again, by job kind and step",
            self.step_retries.clone(),
        );
        registry.register(
            "step_failures",
            "Job steps that failed, by job kind, step and stable error code",
            self.step_failures.clone(),
        );
        registry.register(
            "forge_call_errors",
            "Forge API calls that ended in an error, by operation and stable error code",
            self.forge_errors.clone(),
        );
        registry.register(
            "backend_call_errors",
            "Compute backend calls that ended in an error, by backend, operation and code",
            self.backend_errors.clone(),
        );
        registry.register(
            "job_event_channels",
            "Job event channels held in memory: one per job that runs or is being followed",
            self.event_channels.clone(),
        );
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label type.
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .map_err(|e| DbError::Worker(format!("cannot encode metrics: {e}")))?;
        Ok(out)
    }

    /// `GET /metrics`, served beside the RPC routes on every listener.
    pub fn router(self: Arc<Self>, db: Db) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(Scrape { metrics: self, db })
    }
}

impl MetricsSink for Metrics {
    fn event_channels(&self, open: usize) {
        self.event_channels
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    fn step_finished(&self, kind: &'static str, step: &'static str, took: Duration) {
        self.step_seconds
            .get_or_create(&StepLabels { kind, step })
            .observe(took.as_secs_f64());
    }

    fn step_retried(&self, kind: &'static str, step: &'static str) {
        self.step_retries
            .get_or_create(&StepLabels { kind, step })
            .inc();
    }

    fn step_failed(&self, kind: &'static str, step: &'static str, code: &str) {
        let code = code_label(code);
        self.step_failures
            .get_or_create(&StepFailureLabels { kind, step, code })
            .inc();
    }

    fn forge_call_failed(&self, operation: &'static str, code: &str) {
        let code = code_label(code);
        self.forge_errors
            .get_or_create(&ForgeLabels { operation, code })
            .inc();
    }

    fn backend_call_failed(&self, backend: &'static str, operation: &'static str, code: &str) {
        let code = code_label(code);
        self.backend_errors
            .get_or_create(&BackendLabels {
                backend,
                operation,
                code,
            })
            .inc();
    }
}

/// What sqlite says at scrape time, as gauge families.
struct Snapshot {
    jobs: Family<JobLabels, Gauge>,
    vms: Family<StateLabel, Gauge>,
    vm_health: Family<StateLabel, Gauge>,
    users: Family<StateLabel, Gauge>,
}

impl Snapshot {
    fn read(conn: &mut rusqlite::Connection) -> Result<Snapshot, DbError> {
        let jobs = Family::<JobLabels, Gauge>::default();
        for kind in JOB_KINDS {
            for state in JOB_STATES {
                jobs.get_or_create(&JobLabels {
                    kind: kind.into(),
                    state: state.into(),
                })
                .set(0);
            }
        }
        let mut stmt =
            conn.prepare_cached("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (kind, state, n) = row?;
            jobs.get_or_create(&JobLabels { kind, state }).set(n);
        }
        drop(stmt);
        let vms = grouped(
            conn,
            "SELECT state, COUNT(*) FROM vms GROUP BY state",
            &VM_STATES,
        )?;
        let vm_health = grouped(
            conn,
            "SELECT COALESCE(health_state, 'unknown'), COUNT(*) FROM vms WHERE state = 'ready' \
             GROUP BY COALESCE(health_state, 'unknown')",
            &HEALTH_STATES,
        )?;
        let users = grouped(
            conn,
            "SELECT setup_state, COUNT(*) FROM users GROUP BY setup_state",
            &SETUP_STATES,
        )?;
        Ok(Snapshot {
            jobs,
            vms,
            vm_health,
            users,
        })
    }
}

fn grouped(
    conn: &rusqlite::Connection,
    sql: &str,
    known: &[&str],
) -> Result<Family<StateLabel, Gauge>, DbError> {
    let family = Family::<StateLabel, Gauge>::default();
    for state in known {
        family
            .get_or_create(&StateLabel {
                state: (*state).into(),
            })
            .set(0);
    }
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        family.get_or_create(&StateLabel { state }).set(n);
    }
    Ok(family)
}

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    db: Db,
}

/// The OpenMetrics content type `prometheus-client` writes (Prometheus negotiates it).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn scrape(State(s): State<Scrape>) -> Response {
    match s.metrics.render(&s.db).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics scrape failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics unavailable: the database could not be read\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn sample<'a>(text: &'a str, line_start: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[tokio::test]
    async fn state_from_sqlite_and_counters_from_the_sink() {
        let db = Db::open_in_memory().unwrap();
        db.write(|c| {
            c.execute_batch(
                "INSERT INTO users (forge_username, email, setup_state, created_at, updated_at)
                     VALUES ('a', 'a@x', 'active', 0, 0), ('b', 'b@x', 'pending', 0, 0);
                 INSERT INTO jobs (user_id, forge_username, kind, state, backend, actor, created_at_ms)
                     VALUES (1, 'a', 'provision', 'succeeded', 'local', 't', 0),
                            (2, 'b', 'provision', 'failed', 'local', 't', 0),
                            (1, 'a', 'decommission', 'succeeded', 'local', 't', 0);
                 INSERT INTO vms (user_id, forge_username, backend, name, state, deployer_version, created_at, updated_at)
                     VALUES (1, 'a', 'local', 'a', 'ready', 'v', 0, 0);",
            )
            .map_err(DbError::from)
        })
        .await
        .unwrap();
        let m = Metrics::new();
        m.step_finished("provision", "wait_ssh", Duration::from_millis(700));
        m.step_retried("provision", "wait_ssh");
        m.step_failed("provision", "verify", "PRV004");
        m.forge_call_failed("create_user", "FRG006_conflict");
        m.forge_call_failed("create_user", "FRG006_conflict");
        m.backend_call_failed("local", "deploy_vm", "BKD001");
        let text = m.render(&db).await.unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let get = |p: &str| sample(&text, p).unwrap_or_else(|| panic!("{p} missing:\n{text}"));
        assert_eq!(
            get(r#"hero_deployer_jobs{kind="provision",state="succeeded"}"#),
            "1"
        );
        assert_eq!(
            get(r#"hero_deployer_jobs{kind="provision",state="running"}"#),
            "0"
        );
        assert_eq!(get(r#"hero_deployer_vms{state="ready"}"#), "1");
        assert_eq!(get(r#"hero_deployer_vm_health{state="unknown"}"#), "1");
        assert_eq!(get(r#"hero_deployer_vm_health{state="unreachable"}"#), "0");
        assert_eq!(
            get(r#"hero_deployer_jobs{kind="repair",state="running"}"#),
            "0"
        );
        assert_eq!(get(r#"hero_deployer_users{state="pending"}"#), "1");
        assert_eq!(
            get(
                r#"hero_deployer_forge_call_errors_total{operation="create_user",code="FRG006_conflict"}"#
            ),
            "2"
        );
        assert_eq!(
            get(
                r#"hero_deployer_step_duration_seconds_bucket{le="1.0",kind="provision",step="wait_ssh"}"#
            ),
            "1"
        );
        assert_eq!(
            get(
                r#"hero_deployer_step_duration_seconds_bucket{le="0.5",kind="provision",step="wait_ssh"}"#
            ),
            "0"
        );
    }

    #[test]
    fn only_code_shaped_strings_become_labels() {
        for ok in [
            "FRG006_conflict",
            "backend.unavailable",
            "step.deadline",
            "PRV-1",
        ] {
            assert_eq!(code_label(ok), ok);
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "Forge at http://x refused",
            "alice@example.org",
            "a\"b",
            "line\nbreak",
            "é",
            long.as_str(),
        ] {
            assert_eq!(code_label(bad), "other", "{bad:?}");
        }
    }
}
