//! The steps of provision and decommission jobs: one type per step, one file per step, and their
//! order in one table per job kind ([`PROVISION`], [`DECOMMISSION`]).
//!
//! Adding a step is one new file here (a unit struct with `NAME`, a [`Step`] impl) and one line
//! in a table. Everything that counts or lists steps — the runner's "step n/N", the names stored
//! with a job, the config's deadline overrides, the OpenRPC summary, the docs' list (checked by a
//! test) — reads the table.
//!
//! Each step is idempotent: it first looks for what an earlier attempt (or an earlier process)
//! made and adopts it, and it records what it found or made in the job's [`JobContext`], which
//! is persisted together with the step's `done`. A step sees the world only through its
//! [`StepCx`]: the job, its options, the backend, the VM agent, the node selector, the user's
//! keys, and [`StepRecords`] for what it has to say or record — never SQL, never the whole
//! provisioner.

pub(crate) mod configure_sso;
mod decommission_vm_rows;
mod delete_gateway;
pub mod delete_sso_app;
mod delete_vm;
mod deploy_gateway;
mod deploy_vm;
mod finalize;
mod forge_user;
mod push_manifest;
pub mod register_sso;
mod run_bootstrap;
mod select_node;
mod ssh_key;
mod verify_health;
mod wait_ssh;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::node_selection::SelectError;
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayInfo, NodeSelector, OutputSink, ResourceName, VmInfo,
    VmSpec,
};
use hero_os_tfgrid_deployer_sdk::jobs::{
    EventLevel, Job, JobKind, ProvisionOptions, ProvisionResult,
};
use hero_os_tfgrid_deployer_sdk::types::UserId;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::agent::VmAgent;
use super::config::ProvisionConfig;
use super::events::human;
use super::facts::Fact;
use super::sshkeys::PublicKeyFacts;
use crate::error::ServiceError;
use crate::service::Deployer;

pub use decommission_vm_rows::remove_resources;

/// One step of a job. Implementations are unit structs with an inherent `NAME` constant (what
/// the table and the stored step rows use) that `name` returns.
#[async_trait]
pub trait Step: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// How long one run of the step may take, all attempts included (overridable per step in
    /// `[provision.step_deadline_secs]`). Generous for the grid, short for bookkeeping.
    fn deadline(&self) -> Duration;
    /// True for the steps that call the compute backend (deploy and delete of the VM and the gateway): their
    /// default deadline stretches to the backend's [`ComputeBackend::longest_call`] (see `runner::step_budget`).
    fn calls_backend(&self) -> bool {
        false
    }
    /// One attempt. Must be idempotent: adopt what an earlier attempt made.
    async fn run(&self, cx: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError>;
}

/// Declares a step table and the list of its names from one list of step types, so the two
/// cannot disagree.
macro_rules! step_table {
    ($(#[$doc:meta])* $table:ident, $names:ident: [$($module:ident :: $step:ident),+ $(,)?]) => {
        $(#[$doc])*
        pub static $table: &[&dyn Step] = &[$(&$module::$step),+];
        /// The names of the steps of the table of the same kind, in order.
        pub const $names: &[&str] = &[$($module::$step::NAME),+];
    };
}

step_table!(
    /// A provision job: from a username to a verified VM behind its public URL.
    PROVISION, PROVISION_STEPS: [
        forge_user::ForgeUser,
        ssh_key::SshKey,
        select_node::SelectNode,
        deploy_vm::DeployVm,
        deploy_gateway::DeployGateway,
        register_sso::RegisterSso,
        wait_ssh::WaitSsh,
        push_manifest::PushManifest,
        configure_sso::ConfigureSso,
        run_bootstrap::RunBootstrap,
        verify_health::VerifyHealth,
        finalize::Finalize,
    ]
);

step_table!(
    /// A decommission job, in reverse; every step treats "already gone" as success, so a
    /// decommission can always be finished.
    DECOMMISSION, DECOMMISSION_STEPS: [
        delete_gateway::DeleteGateway,
        delete_vm::DeleteVm,
        delete_sso_app::DeleteSsoApp,
        decommission_vm_rows::MarkDecommissioned,
    ]
);

step_table!(
    /// A repair job: the bootstrap half of [`PROVISION`] again, on the live VM (its VM, gateway,
    /// key and OAuth app stay; the steps are the same idempotent ones, with the provision's
    /// context).
    REPAIR, REPAIR_STEPS: [
        push_manifest::PushManifest,
        configure_sso::ConfigureSso,
        run_bootstrap::RunBootstrap,
        verify_health::VerifyHealth,
    ]
);

step_table!(
    /// A sync of who may open the VM: `configure_sso` alone on the live VM (the edge reads the
    /// owner and admin slots on every request, so nothing needs restarting), with the provision's
    /// context. The deployer starts it when the admin list changed (`crate::fleet::access`).
    SYNC_ACCESS, SYNC_ACCESS_STEPS: [
        configure_sso::ConfigureSso,
    ]
);

/// The steps of a job kind, in order.
pub fn table(kind: JobKind) -> &'static [&'static dyn Step] {
    match kind {
        JobKind::Provision => PROVISION,
        JobKind::Decommission => DECOMMISSION,
        JobKind::Repair | JobKind::Redeploy => REPAIR,
        JobKind::SyncAccess => SYNC_ACCESS,
    }
}

/// The names of the steps of a job kind, in order.
pub fn steps_for(kind: JobKind) -> &'static [&'static str] {
    match kind {
        JobKind::Provision => PROVISION_STEPS,
        JobKind::Decommission => DECOMMISSION_STEPS,
        JobKind::Repair | JobKind::Redeploy => REPAIR_STEPS,
        JobKind::SyncAccess => SYNC_ACCESS_STEPS,
    }
}

/// The step called `name`, in any table.
pub fn by_name(name: &str) -> Option<&'static dyn Step> {
    PROVISION
        .iter()
        .chain(DECOMMISSION)
        .find(|s| s.name() == name)
        .copied()
}

pub fn is_step_name(name: &str) -> bool {
    by_name(name).is_some()
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

/// Every error type says itself whether a retry makes sense ([`crate::forge::ForgeError`],
/// [`BackendError`], [`SelectError`]); a step never decides it for them.
impl From<ServiceError> for StepError {
    fn from(e: ServiceError) -> Self {
        StepError {
            code: e.kind().as_str().to_owned(),
            transient: e.is_transient(),
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
    /// The VM's OAuth app on Forge and its (public) client id, as `register_sso` made or adopted
    /// them; the secret is only in the secret store.
    #[serde(default)]
    pub oauth_app_id: Option<i64>,
    #[serde(default)]
    pub oauth_client_id: Option<String>,
    /// What `verify_health` saw of the VM's sign-in gate (public).
    #[serde(default)]
    pub gate: Option<hero_os_tfgrid_deployer_sdk::jobs::GateCheck>,
    /// Nodes a `deploy_vm` of this job failed on in a way that points at the node
    /// ([`node_selection::exclude_node_after`](hero_os_tfgrid_deployer_backends::node_selection::exclude_node_after)):
    /// the next selection never picks them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_nodes: Vec<u32>,
    /// Decommission jobs: the user's VM record never reached its backend (no deploy was ever
    /// attempted), so there is nothing to delete there and the backend is not asked — a
    /// misconfigured backend (no mnemonic, no socket) cannot keep such a record alive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backend_untouched: bool,
    /// The admin list `configure_sso` wrote into the VM (public: Forge logins), recorded on the
    /// VM row when the job succeeds (`vms.admins_pushed`, read by `crate::fleet::access`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admins_pushed: Option<String>,
}

/// A line produced while a step runs, written as an event of the step.
#[derive(Debug)]
pub struct OutLine {
    pub level: EventLevel,
    pub attempt: Option<u32>,
    pub elapsed: Option<Duration>,
    pub message: String,
}

/// Where a step is in its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepAt {
    /// 1-based position in the job's table.
    pub index: u32,
    /// Steps in the job's table.
    pub count: u32,
    pub name: &'static str,
}

/// What a step may say and record. The runner's [`super::recorder::JobRecorder`] is one; a test
/// can collect them instead.
#[async_trait]
pub trait StepRecords: Send + Sync {
    /// A line of the step's progress or output; the step does not wait for it to be written.
    fn line(&self, at: StepAt, line: OutLine);
    /// The same for a backend's child process, which may keep the sink beyond the attempt.
    fn sink(&self, at: StepAt, attempt: u32, started: Instant) -> OutputSink;
    /// A fact the step needs recorded before it goes on (the VM row before `deploy_vm` asks the
    /// backend); returns what the fact returns (a row id, a count).
    async fn record_now(&self, fact: Fact) -> Result<i64, ServiceError>;
    /// A fact written together with the step's outcome (its `done`, or its failure), so it
    /// becomes visible with it. Only for facts a re-run of the step finds and records again.
    fn record_with_outcome(&self, fact: Fact);
}

/// The user's SSH key pair, as steps need it.
#[async_trait]
pub trait UserKeys: Send + Sync {
    /// The user's key, made if there is none; `true` when it was made now.
    async fn ensure(
        &self,
        user_id: UserId,
        comment: &str,
    ) -> Result<(PublicKeyFacts, bool), ServiceError>;
    async fn public(&self, user_id: UserId) -> Result<Option<PublicKeyFacts>, ServiceError>;
    /// The private key, unsealed.
    async fn private(&self, user_id: UserId) -> Result<zeroize::Zeroizing<String>, ServiceError>;
}

/// What every step of every job may use, built once per provisioner.
pub struct StepEnv {
    /// User records and Forge (`forge_user`, `finalize`).
    pub users: Deployer,
    pub agent: Arc<dyn VmAgent>,
    /// How `select_node` asks the grid; an error when the config cannot name a gridproxy.
    pub nodes: Result<Arc<dyn NodeSelector>, StepError>,
    pub cfg: ProvisionConfig,
    /// The bootstrap script uploaded by `run_bootstrap`.
    pub bootstrap_script: String,
}

/// The user's private key, unsealed at most once per run of a job and zeroed when the run ends.
pub type KeyCache = tokio::sync::OnceCell<zeroize::Zeroizing<String>>;

/// Everything one attempt of one step may use.
pub struct StepCx<'a> {
    pub job: &'a Job,
    pub options: &'a ProvisionOptions,
    pub at: StepAt,
    pub attempt: u32,
    /// Start of this run of the step (attempts included).
    pub started: Instant,
    pub deadline: Instant,
    pub env: &'a StepEnv,
    /// The job's backend, or why there is none.
    pub backend: Result<Arc<dyn ComputeBackend>, StepError>,
    pub keys: &'a dyn UserKeys,
    pub records: &'a dyn StepRecords,
    /// Lives for one run of the job: the steps that need the private key unseal it once.
    pub key: &'a KeyCache,
}

impl StepCx<'_> {
    /// A progress message of this step.
    pub fn say(&self, message: impl Into<String>) {
        self.line(EventLevel::Info, Some(self.attempt), message.into());
    }

    /// A line (child output, poll attempts), also from synchronous callbacks.
    pub fn line(&self, level: EventLevel, attempt: Option<u32>, message: String) {
        self.records.line(
            self.at,
            OutLine {
                level,
                attempt,
                elapsed: Some(self.started.elapsed()),
                message,
            },
        );
    }

    /// Backend child-process output, as `output` events.
    pub fn sink(&self) -> OutputSink {
        self.records.sink(self.at, self.attempt, self.started)
    }

    /// `step 6/10 wait_ssh: attempt 3, 37 s`
    pub fn progress(&self, attempt: u32) -> String {
        format!(
            "step {}/{} {}: attempt {attempt}, {}",
            self.at.index,
            self.at.count,
            self.at.name,
            human(self.started.elapsed())
        )
    }

    pub fn backend(&self) -> Result<Arc<dyn ComputeBackend>, StepError> {
        self.backend.clone()
    }

    /// The user's resource name on every backend: `hero_u<id>_<grid name>`.
    pub fn resource_name(&self) -> Result<ResourceName, StepError> {
        resource_name(self.job.user_id, &self.job.forge_username)
    }

    /// The user's private key for SSH (see [`KeyCache`]).
    pub async fn private_key(&self) -> Result<&zeroize::Zeroizing<String>, StepError> {
        Ok(self
            .key
            .get_or_try_init(|| self.keys.private(self.job.user_id))
            .await?)
    }

    /// The wall clock in seconds, for the rows steps record.
    pub fn now(&self) -> i64 {
        self.env.users.clock.now()
    }

    /// See [`StepRecords::record_now`].
    pub async fn record_now(&self, fact: Fact) -> Result<i64, StepError> {
        Ok(self.records.record_now(fact).await?)
    }

    /// See [`StepRecords::record_with_outcome`].
    pub fn record_with_outcome(&self, fact: Fact) {
        self.records.record_with_outcome(fact)
    }

    /// How often the polling steps look again.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.env.cfg.poll_ms)
    }
}

pub fn resource_name(user_id: i64, username: &str) -> Result<ResourceName, StepError> {
    Ok(ResourceName::new(
        user_id,
        &hero_os_tfgrid_deployer_sdk::username::grid_name(username),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_in_one_table_once_under_its_own_name() {
        let mut seen = std::collections::BTreeSet::new();
        for kind in [JobKind::Provision, JobKind::Decommission] {
            let names: Vec<&str> = table(kind).iter().map(|s| s.name()).collect();
            assert_eq!(names, steps_for(kind));
            for name in names {
                assert!(seen.insert(name), "{name} twice");
                assert!(by_name(name).is_some_and(|s| s.deadline() > Duration::ZERO));
            }
        }
        assert!(!is_step_name("wait_shh"));
        // Repair is a slice of the provision table, in its order: the same steps, not copies.
        let names: Vec<&str> = table(JobKind::Repair).iter().map(|s| s.name()).collect();
        assert_eq!(names, steps_for(JobKind::Repair));
        assert!(PROVISION_STEPS
            .windows(REPAIR_STEPS.len())
            .any(|w| w == REPAIR_STEPS));
    }
}
