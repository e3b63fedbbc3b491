//! The steps of provision and decommission jobs. Each step is idempotent: it first looks for what
//! an earlier attempt (or an earlier process) made and adopts it, and it records what it found or
//! made in the job's [`JobContext`], which is persisted together with the step's `done`.

mod decommission;
mod provision;

use std::sync::Arc;
use std::time::Duration;

use hero_os_tfgrid_deployer_backends::node_selection::SelectError;
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayInfo, OutputSink, ResourceName, VmInfo, VmSpec,
};
use hero_os_tfgrid_deployer_sdk::jobs::{
    EventLevel, Job, JobKind, ProvisionOptions, ProvisionResult,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::events::human;
pub use super::runner::Held;
use super::Provisioner;
use crate::error::ServiceError;
use crate::forge::ForgeError;

pub const PROVISION_STEPS: &[&str] = &[
    "forge_user",
    "ssh_key",
    "select_node",
    "deploy_vm",
    "deploy_gateway",
    "wait_ssh",
    "push_manifest",
    "run_bootstrap",
    "verify_health",
    "finalize",
];

pub const DECOMMISSION_STEPS: &[&str] = &["delete_gateway", "delete_vm", "mark_decommissioned"];

pub fn steps_for(kind: JobKind) -> &'static [&'static str] {
    match kind {
        JobKind::Provision => PROVISION_STEPS,
        JobKind::Decommission => DECOMMISSION_STEPS,
    }
}

pub fn is_step_name(name: &str) -> bool {
    PROVISION_STEPS.contains(&name) || DECOMMISSION_STEPS.contains(&name)
}

/// How long one run of a step may take, all attempts included. Generous for the grid (a
/// deployment can take minutes, a bootstrap downloads binaries), short for local bookkeeping.
pub fn default_deadline(name: &str) -> Duration {
    Duration::from_secs(match name {
        "forge_user" => 120,
        "ssh_key" | "finalize" | "mark_decommissioned" => 30,
        "select_node" => 60,
        "deploy_vm" => 900,
        "deploy_gateway" | "verify_health" | "delete_gateway" => 300,
        "wait_ssh" | "delete_vm" => 600,
        "push_manifest" => 120,
        "run_bootstrap" => 1800,
        _ => 60,
    })
}

/// Why a step attempt failed. `transient` decides whether another attempt (after backoff) makes
/// sense; `code` is stable, `message` is for people and never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub code: String,
    pub message: String,
    pub transient: bool,
}

impl StepError {
    pub fn transient(code: &str, message: impl Into<String>) -> StepError {
        StepError {
            code: code.to_owned(),
            message: message.into(),
            transient: true,
        }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> StepError {
        StepError {
            code: code.to_owned(),
            message: message.into(),
            transient: false,
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

impl From<BackendError> for StepError {
    fn from(e: BackendError) -> Self {
        StepError {
            code: e.code().to_owned(),
            transient: e.is_transient(),
            message: e.to_string(),
        }
    }
}

impl From<SelectError> for StepError {
    fn from(e: SelectError) -> Self {
        StepError {
            code: e.code().to_owned(),
            transient: e.is_transient(),
            message: e.to_string(),
        }
    }
}

impl From<ServiceError> for StepError {
    fn from(e: ServiceError) -> Self {
        let transient = matches!(
            e,
            ServiceError::Forge(ForgeError::Unreachable { .. } | ForgeError::ServerError { .. })
                | ServiceError::Db(_)
        );
        StepError {
            code: e.kind().as_str().to_owned(),
            transient,
            message: e.to_string(),
        }
    }
}

/// What earlier steps of this job found or made. Persisted as `jobs.context_json`; never holds
/// a secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobContext {
    pub key_fingerprint: Option<String>,
    /// The user's OpenSSH public key (public; spares `deploy_vm` a read).
    pub public_key: Option<String>,
    /// Whether the deployer holds the user's initial password, as `forge_user` found it
    /// (spares `finalize` a read).
    pub initial_password_held: Option<bool>,
    pub node_id: Option<u32>,
    pub node_domain: Option<String>,
    pub spec: Option<VmSpec>,
    pub vm_id: Option<i64>,
    pub vm: Option<VmInfo>,
    pub gateway: Option<GatewayInfo>,
    pub host_key: Option<String>,
    pub result: Option<ProvisionResult>,
}

/// A line produced while a step runs, written as an event in order by the runner.
#[derive(Debug)]
pub struct OutLine {
    pub level: EventLevel,
    pub attempt: Option<u32>,
    pub elapsed: Option<Duration>,
    pub message: String,
}

/// Everything one attempt of one step may use.
pub struct Scope<'a> {
    pub p: &'a Provisioner,
    pub job: &'a Job,
    pub options: &'a ProvisionOptions,
    pub index: u32,
    pub count: u32,
    pub name: &'static str,
    pub attempt: u32,
    /// Start of this run of the step (attempts included).
    pub started: Instant,
    pub deadline: Instant,
    pub out: UnboundedSender<OutLine>,
    /// Lives for one run of the job: the steps that need the private key unseal it once.
    pub key: &'a KeyCache,
    /// Bookkeeping this step leaves to the runner (see [`Scope::write_later`]).
    pub later: &'a LaterWrites,
    /// The job's records held back until this step writes (see [`Held`]).
    pub held: &'a Held,
}

/// A write a step leaves to the runner.
pub type LaterWrite =
    Box<dyn FnOnce(&rusqlite::Connection) -> Result<(), ServiceError> + Send + 'static>;

/// The writes a step left to the runner, in order.
pub type LaterWrites = std::sync::Mutex<Vec<LaterWrite>>;

/// The user's private key, unsealed at most once per run of a job and zeroed when the run ends.
pub type KeyCache = tokio::sync::OnceCell<zeroize::Zeroizing<String>>;

impl Scope<'_> {
    /// A progress message of this step, written in order with its output lines. The step does
    /// not wait for it (an event is news for followers, not a fact later steps rely on).
    pub fn say(&self, message: impl Into<String>) {
        self.line(EventLevel::Info, Some(self.attempt), message.into());
    }

    /// A write the step needs committed before it goes on (the VM row ahead of `deploy_vm`),
    /// queued after the job's held records (see [`Held`]). Steps write through their scope,
    /// never around it, so their rows and events never land before their start.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StepError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, ServiceError> + Send + 'static,
    {
        Ok(self
            .held
            .then(self.p, self.job.job_id, || self.p.db().write(f))
            .await?)
    }

    /// The user's private key for SSH (see [`KeyCache`]).
    pub async fn private_key(&self) -> Result<&zeroize::Zeroizing<String>, StepError> {
        Ok(self
            .key
            .get_or_try_init(|| self.p.private_key(self.job.user_id))
            .await?)
    }

    /// Records facts about what the step made (IPs, URLs, host keys) with the step's outcome,
    /// in the job's next write, instead of in a write of their own: a round trip less, and the
    /// facts become visible together with the step's completion. Only for facts a re-run of
    /// the step finds and records again; rows that must exist *before* the step acts (the VM
    /// row ahead of `deploy_vm`) are written at once.
    pub fn write_later(
        &self,
        write: impl FnOnce(&rusqlite::Connection) -> Result<(), ServiceError> + Send + 'static,
    ) {
        super::lock(self.later).push(Box::new(write));
    }

    /// Queue a line (child output, poll attempts) from synchronous callbacks.
    pub fn line(&self, level: EventLevel, attempt: Option<u32>, message: String) {
        let _ = self.out.send(OutLine {
            level,
            attempt,
            elapsed: Some(self.started.elapsed()),
            message,
        });
    }

    /// Backend child-process output, as `output` events.
    pub fn sink(&self) -> OutputSink {
        let tx = self.out.clone();
        let started = self.started;
        let attempt = self.attempt;
        Arc::new(move |line: &str| {
            let _ = tx.send(OutLine {
                level: EventLevel::Output,
                attempt: Some(attempt),
                elapsed: Some(started.elapsed()),
                message: line.to_owned(),
            });
        })
    }

    /// `step 6/10 wait_ssh: attempt 3, 37 s`
    pub fn progress(&self, attempt: u32) -> String {
        format!(
            "step {}/{} {}: attempt {attempt}, {}",
            self.index,
            self.count,
            self.name,
            human(self.started.elapsed())
        )
    }

    pub fn backend(&self) -> Result<Arc<dyn ComputeBackend>, StepError> {
        Ok(self.p.backend(&self.job.backend)?)
    }

    /// The user's resource name on every backend: `hero_u<id>_<grid name>`.
    pub fn resource_name(&self) -> Result<ResourceName, StepError> {
        resource_name(self.job.user_id, &self.job.forge_username)
    }
}

pub fn resource_name(user_id: i64, username: &str) -> Result<ResourceName, StepError> {
    Ok(ResourceName::new(
        user_id,
        &hero_os_tfgrid_deployer_sdk::username::grid_name(username),
    )?)
}

/// Runs one attempt of the named step.
pub async fn run(scope: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    match scope.name {
        "forge_user" => provision::forge_user(scope, ctx).await,
        "ssh_key" => provision::ssh_key(scope, ctx).await,
        "select_node" => provision::select_node(scope, ctx).await,
        "deploy_vm" => provision::deploy_vm(scope, ctx).await,
        "deploy_gateway" => provision::deploy_gateway(scope, ctx).await,
        "wait_ssh" => provision::wait_ssh(scope, ctx).await,
        "push_manifest" => provision::push_manifest(scope, ctx).await,
        "run_bootstrap" => provision::run_bootstrap(scope, ctx).await,
        "verify_health" => provision::verify_health(scope, ctx).await,
        "finalize" => provision::finalize(scope, ctx).await,
        "delete_gateway" => decommission::delete_gateway(scope).await,
        "delete_vm" => decommission::delete_vm(scope).await,
        "mark_decommissioned" => decommission::mark_decommissioned(scope).await,
        other => Err(StepError::fatal(
            "step.unknown",
            format!("unknown step {other}"),
        )),
    }
}

pub use decommission::remove_resources;
