//! The provisioning pipeline (issue 3): persisted jobs that take a username to a verified VM
//! behind a public gateway URL, and back to nothing.
//!
//! Architecture invariants:
//! * A job row and its step rows are committed before any work starts ([`store`]); every state
//!   change and every progress line is persisted ([`events`]), so a crash at any instant leaves
//!   a job the next start resumes ([`runner`]), and a follower can replay everything.
//! * Every step is idempotent: it first looks for what an earlier attempt made and adopts it
//!   ([`steps`]); the compute backends have the same contract (deploy adopts, delete accepts
//!   "already gone"). Steps are types in one table; a saved job is matched to it by step name
//!   ([`resume`]). A job's life is [`runner`]; what it records goes through [`recorder`].
//! * At most one active job per user is enforced by a partial unique index, not by a
//!   check-then-insert; the global concurrency limit is a semaphore; queued jobs wait in state
//!   `queued`.
//! * A job's heartbeat is written by the same task that drives its steps, so a wedged step stops
//!   the heartbeat and the [`reaper`] fails the job with the reason.
//! * Secrets (private keys, passwords, tokens) never reach events, logs or sqlite in plaintext
//!   ([`sshkeys`] seals private keys with a key from the secret store).

pub mod agent;
pub mod api;
pub mod config;
pub mod events;
pub mod facts;
pub mod faults;
pub mod forget;
pub mod gate;
pub mod lazy_backend;
pub mod metered_backend;
pub mod oauth_apps;
pub mod output_log;
pub mod reaper;
pub mod reconcile;
pub mod recorder;
pub mod resume;
pub mod rpc;
pub mod runner;
pub mod ssh_target;
pub mod sshkeys;
pub mod states;
pub mod steps;
pub mod store;
pub mod vm_secrets;
pub mod vms;
pub mod wiring;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hero_os_tfgrid_deployer_backends::{ComputeBackend, GridProxyClient, Network, NodeSelector};
use hero_os_tfgrid_deployer_sdk::jobs::JobId;

use crate::error::ServiceError;
use crate::service::Deployer;

use self::agent::VmAgent;
use self::config::ProvisionConfig;

/// Version recorded on every VM row, so an operator can tell which deployer made it.
pub const DEPLOYER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Millisecond timestamps for jobs and events, derived from the core's [`crate::clock::Clock`]
/// (seconds) once at start and advanced by tokio's monotonic clock, so they are ordered within a
/// process, have millisecond resolution, and follow paused time in tests.
#[derive(Debug, Clone, Copy)]
pub struct Timebase {
    wall_ms_at_start: i64,
    started: tokio::time::Instant,
}

impl Timebase {
    /// `wall_ms`: the wall clock in milliseconds now (a whole-second start would make every
    /// `at_ms` of the process lag real time by the same sub-second amount).
    pub fn new(wall_ms: i64) -> Timebase {
        Timebase {
            wall_ms_at_start: wall_ms,
            started: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.wall_ms_at_start + self.started.elapsed().as_millis() as i64
    }
}

/// Everything the orchestrator is built from; the server builds it from config, tests and the
/// benchmark from stand-ins.
pub struct Parts {
    pub deployer: Deployer,
    pub config: ProvisionConfig,
    /// Backends by kind (`local`, ...). Only these can be used by jobs.
    pub backends: BTreeMap<String, Arc<dyn ComputeBackend>>,
    /// SSH and HTTP towards the VM.
    pub agent: Arc<dyn VmAgent>,
    /// The bootstrap script uploaded by `run_bootstrap`.
    pub bootstrap_script: String,
    /// How `select_node` asks the grid; `None`: gridproxy as the config names it.
    pub nodes: Option<Arc<dyn NodeSelector>>,
    /// Test builds: the runner's fault switches (crash and stall points; the backend and agent
    /// faults are wrappers, see [`faults`]).
    pub faults: faults::Faults,
    /// Where step timings, retries and failures are counted (`GET /metrics`).
    pub metrics: Arc<dyn crate::metrics::MetricsSink>,
}

/// The job orchestrator. Cheap to clone.
#[derive(Clone)]
pub struct Provisioner {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub d: Deployer,
    pub cfg: ProvisionConfig,
    pub backends: BTreeMap<String, Arc<dyn ComputeBackend>>,
    /// What every step may use.
    pub env: steps::StepEnv,
    pub faults: faults::Faults,
    pub metrics: Arc<dyn crate::metrics::MetricsSink>,
    pub time: Timebase,
    /// Global concurrency limit.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Per job, bumped after every persisted event or state change of that job; its long-polls
    /// wait on it (per job, so a busy server does not wake every follower for every event).
    pub buses: Mutex<HashMap<JobId, Arc<tokio::sync::watch::Sender<u64>>>>,
    /// Workers of this process, by job.
    pub workers: Mutex<HashMap<JobId, runner::Worker>>,
    /// Serializes the first-use creation of the SSH key sealing key.
    pub sealing_key_lock: tokio::sync::Mutex<()>,
}

impl Provisioner {
    /// Builds the orchestrator. Call [`Provisioner::start`] to resume jobs and run the reaper.
    pub fn new(parts: Parts) -> Provisioner {
        let slots = Arc::new(tokio::sync::Semaphore::new(
            parts.config.max_concurrent_jobs,
        ));
        let nodes = match parts.nodes {
            Some(nodes) => Ok(nodes),
            None => gridproxy(&parts.config.grid),
        };
        Provisioner {
            inner: Arc::new(Inner {
                time: Timebase::new(parts.deployer.clock.now_ms()),
                env: steps::StepEnv {
                    users: parts.deployer.clone(),
                    agent: parts.agent,
                    nodes,
                    cfg: parts.config.clone(),
                    bootstrap_script: parts.bootstrap_script,
                },
                d: parts.deployer,
                cfg: parts.config,
                backends: parts.backends,
                faults: parts.faults,
                metrics: parts.metrics,
                slots,
                buses: Mutex::new(HashMap::new()),
                workers: Mutex::new(HashMap::new()),
                sealing_key_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Resumes every queued, running or cancelling job left by an earlier process, and starts
    /// the reaper. Returns the reaper's task so the caller can stop it at shutdown.
    pub async fn start(&self) -> Result<tokio::task::JoinHandle<()>, ServiceError> {
        let active = self
            .db()
            .call(|conn| -> Result<Vec<JobId>, ServiceError> { Ok(store::active_job_ids(conn)?) })
            .await?;
        for job_id in active {
            tracing::info!(job_id, "resuming job left by an earlier run");
            // Alive again: the reaper must not take the downtime for a hang.
            let now = self.now_ms();
            self.db()
                .write(move |conn| store::heartbeat(conn, job_id, now))
                .await?;
            self.event(
                job_id,
                events::Draft::info("server restarted: resuming the job"),
            )
            .await?;
            self.spawn_worker(job_id);
        }
        Ok(reaper::spawn(self.clone()))
    }

    /// Stops every worker of this process (without touching their persisted state, so the next
    /// start resumes them).
    pub fn shutdown(&self) {
        if let Ok(mut workers) = self.inner.workers.lock() {
            for (_, w) in workers.drain() {
                w.abort();
            }
        }
    }

    pub(crate) fn db(&self) -> &crate::db::Db {
        &self.inner.d.db
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.time.now_ms()
    }

    /// The notification channel of one job.
    pub(crate) fn bus(&self, job_id: JobId) -> Arc<tokio::sync::watch::Sender<u64>> {
        let mut buses = lock(&self.inner.buses);
        let before = buses.len();
        let bus = buses
            .entry(job_id)
            .or_insert_with(|| Arc::new(tokio::sync::watch::channel(0u64).0))
            .clone();
        if buses.len() != before {
            self.inner.metrics.event_channels(buses.len());
        }
        bus
    }

    /// Wakes the job's followers. The channel of a job that ended is dropped: its followers
    /// see the final state on their next read and stop waiting.
    pub(crate) fn bump(&self, job_id: JobId) {
        self.bus(job_id).send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes the followers of an ended job and forgets its channel.
    pub(crate) fn drop_bus(&self, job_id: JobId) {
        self.bump(job_id);
        self.forget_bus(job_id);
    }

    pub(crate) fn forget_bus(&self, job_id: JobId) {
        let mut buses = lock(&self.inner.buses);
        if buses.remove(&job_id).is_some() {
            self.inner.metrics.event_channels(buses.len());
        }
    }

    /// Forgets the channel of a job that turned out not to exist, unless someone else waits on
    /// it. Why: `job_events` subscribes before it reads, so every unknown id a caller asked for
    /// (a typo, or a TCP caller walking ids) left a channel nothing would ever end, and the map
    /// grew without bound.
    pub(crate) fn forget_unwatched_bus(&self, job_id: JobId) {
        let mut buses = lock(&self.inner.buses);
        if buses.get(&job_id).is_some_and(|b| b.receiver_count() == 0) {
            buses.remove(&job_id);
            self.inner.metrics.event_channels(buses.len());
        }
    }

    pub(crate) fn backend(&self, kind: &str) -> Result<Arc<dyn ComputeBackend>, ServiceError> {
        self.inner.backends.get(kind).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.inner.backends.keys().map(String::as_str).collect();
            ServiceError::FailedPrecondition(format!(
                "compute backend {kind:?} is not available in this server (available: {})",
                known.join(", ")
            ))
        })
    }

    /// The deployer core this orchestrator drives.
    pub fn deployer(&self) -> &Deployer {
        &self.inner.d
    }

    /// The VM agent the steps use (the health watch probes through it too).
    pub fn agent(&self) -> Arc<dyn VmAgent> {
        self.inner.env.agent.clone()
    }

    /// The configured default backend.
    pub fn default_backend(&self) -> &str {
        &self.inner.cfg.backend
    }
}

/// The gridproxy the config names (`grid.gridproxy_url`, else the network's), or why not.
fn gridproxy(grid: &config::GridSection) -> Result<Arc<dyn NodeSelector>, steps::StepError> {
    let client = match &grid.gridproxy_url {
        Some(url) => GridProxyClient::with_base_url(url.clone()),
        None => {
            let network: Network = grid.network.parse().map_err(|e| {
                steps::StepError::fatal("config.network", format!("grid.network: {e}"))
            })?;
            GridProxyClient::new(network)
        }
    }
    .map_err(|e| steps::StepError::fatal(e.code(), e.to_string()))?;
    Ok(Arc::new(client))
}

/// Locks a mutex of the orchestrator's in-memory state even if a panic poisoned it: the data
/// (channels, pending writes) stays valid, and a wedged lock would stall every job.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
