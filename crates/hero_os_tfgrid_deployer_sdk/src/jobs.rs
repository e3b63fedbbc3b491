//! Wire types of the provisioning pipeline: jobs, their steps and events, VM records, reconcile.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::UserId;

pub type JobId = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Provision,
    Decommission,
    /// Re-runs the bootstrap half of a provision (manifest, SSO slots, bootstrap, health) on
    /// the live VM.
    Repair,
    /// The same steps as [`JobKind::Repair`], with another service profile: the live VM gets the
    /// new profile's `services.toml` and is bootstrapped again.
    Redeploy,
    /// Writes who may open the VM (its owner, the admin list, its OAuth client) into the live
    /// VM's SSO edge again, and nothing else: what the deployer starts by itself whenever the
    /// admin list it holds differs from the one a ready VM was last given.
    SyncAccess,
}

impl JobKind {
    /// Jobs that work on a ready VM and leave it there whatever ends them (the VM, its gateway
    /// and its OAuth app are not touched): every rule about "the user keeps a ready VM" asks this
    /// one question, so a new kind of in-place job cannot miss one of them.
    pub fn works_in_place(self) -> bool {
        matches!(
            self,
            JobKind::Repair | JobKind::Redeploy | JobKind::SyncAccess
        )
    }
}

/// Declares `as_str` (the stored and wire spelling) and `parse` (which refuses anything else)
/// for a state enum, from one list, so the two can never disagree.
macro_rules! spelled {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The spelling used on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }

            /// The value spelled `s`; `None` for anything else (never a silent default).
            pub fn parse(s: &str) -> Option<$ty> {
                match s {
                    $($text => Some($ty::$variant),)+
                    _ => None,
                }
            }

            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
        }
    };
}

spelled!(JobKind {
    Provision => "provision",
    Decommission => "decommission",
    Repair => "repair",
    Redeploy => "redeploy",
    SyncAccess => "sync_access",
});
spelled!(JobState {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelling => "cancelling",
    Cancelled => "cancelled",
});
spelled!(StepState {
    Pending => "pending",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Skipped => "skipped",
});
spelled!(EventLevel { Info => "info", Warn => "warn", Error => "error", Output => "output" });

/// Life of a job. `queued` waits for a concurrency slot; `failed` can be retried from the failed
/// step; `succeeded`, `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelling,
    Cancelled,
}

impl JobState {
    /// True while the job holds (or waits for) the user's single active-job slot.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Queued | JobState::Running | JobState::Cancelling
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

/// One step of a job, with its timings (Coder-style build timings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepRecord {
    /// 1-based position.
    pub index: u32,
    pub name: String,
    pub state: StepState,
    pub attempts: u32,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// Last human message of the step.
    pub message: Option<String>,
}

/// A persisted provisioning or decommissioning run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    pub job_id: JobId,
    pub user_id: UserId,
    pub forge_username: String,
    pub kind: JobKind,
    pub state: JobState,
    /// Compute backend used (`local`, `opentofu`, `hero_compute`).
    pub backend: String,
    /// Who started it.
    pub actor: String,
    pub steps: Vec<StepRecord>,
    /// Name of the running or failed step.
    pub current_step: Option<String>,
    /// Precise reason of a failure or cancellation.
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// Last sign of life of the worker; the reaper fails jobs whose heartbeat stopped.
    pub heartbeat_at_ms: Option<i64>,
    /// Set when a provision succeeded.
    pub result: Option<ProvisionResult>,
}

/// What the admin hands to the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProvisionResult {
    pub url: String,
    pub forge_username: String,
    /// Null when the Forge account was adopted.
    pub initial_password_held: bool,
    pub node_id: Option<u32>,
    pub vm_name: String,
    /// What `verify_health` proved of the URL's sign-in gate (absent in results of jobs that
    /// ran before the gate was checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateCheck>,
}

/// The VM's URL is gated: `/health` answered 200 without identity and an unauthenticated
/// `GET /` was sent to the Forge sign-in with this VM's own OAuth client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GateCheck {
    /// The health URL that answered 200.
    pub health_url: String,
    /// Where `GET /` sent an anonymous browser: the Forge authorize endpoint (without its query).
    pub sign_in_at: String,
    /// The OAuth client id that redirect carried: the VM's own app.
    pub client_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventLevel {
    Info,
    Warn,
    Error,
    /// A line of output of a child process (bootstrap script, tofu).
    Output,
}

/// One persisted job event. `seq` increases per job without gaps, so followers resume exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobEvent {
    pub job_id: JobId,
    pub seq: i64,
    pub at_ms: i64,
    pub level: EventLevel,
    pub step: Option<String>,
    pub step_index: Option<u32>,
    pub step_count: u32,
    pub attempt: Option<u32>,
    /// Milliseconds since the step started.
    pub elapsed_ms: Option<i64>,
    /// Human message, e.g. "step 6/10 wait_ssh: attempt 3, 37 s".
    pub message: String,
}

/// Options of `deployer.provision_vm`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionOptions {
    /// Compute backend; default from the server config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Manifest profile; default `demo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Pin a node instead of selecting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u32>,
    /// Days until the VM expires and is decommissioned, at most [`MAX_EXTEND_DAYS`]; 0: never.
    /// Default: the server's `expiry.default_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionVmParams {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<ProvisionOptions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobIdParams {
    pub job_id: JobId,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListJobsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// Only active (queued, running, cancelling) jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_only: Option<bool>,
    /// Only jobs with an id below this (paging back in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<JobId>,
    /// 1..=200, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobsPage {
    pub jobs: Vec<Job>,
    pub next_before: Option<JobId>,
}

/// Params of `deployer.job_events`: a long-poll. Returns at once when events after `after_seq`
/// exist or the job is finished; otherwise waits up to `wait_ms` for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobEventsParams {
    pub job_id: JobId,
    /// Only events with a greater `seq`; 0 (default) replays from the start.
    #[serde(default)]
    pub after_seq: i64,
    /// Longest wait for new events, 0..=30000 ms, default 0 (no wait).
    #[serde(default)]
    pub wait_ms: u32,
    /// 1..=1000, default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobEventsPage {
    pub events: Vec<JobEvent>,
    /// Pass as `after_seq` next time.
    pub last_seq: i64,
    pub job_state: JobState,
    /// True when the job is final and every event has been returned.
    pub done: bool,
}

/// A VM as the deployer recorded it. Kept after decommission, for audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmRecord {
    pub vm_id: i64,
    pub user_id: UserId,
    pub forge_username: String,
    pub backend: String,
    pub name: String,
    pub node_id: Option<u32>,
    /// `deploying`, `ready`, `failed`, `decommissioning`, `decommissioned`.
    pub state: String,
    pub spec: serde_json::Value,
    pub private_ip: Option<String>,
    pub mycelium_ip: Option<String>,
    pub url: Option<String>,
    pub host_key_fingerprint: Option<String>,
    pub deployer_version: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub decommissioned_at: Option<i64>,
    /// Fingerprint of the user's SSH key installed on this VM.
    pub ssh_key_fingerprint: Option<String>,
    /// Backend-specific id (sandbox dir, contract/deployment id).
    pub backend_id: Option<String>,
    /// The provision job that made it.
    pub job_id: Option<JobId>,
    /// When `finalize` recorded it ready (unix seconds).
    pub ready_at: Option<i64>,
    /// What the health watch last saw at the public `/health` (`None`: not probed yet).
    #[serde(default)]
    pub health: Option<VmHealth>,
    /// When the server decommissions this VM (unix seconds); `None`: never.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// The service profile the VM runs (set by its provision, changed by a successful
    /// redeploy); `None` on rows older than the column: the provision job's, or the default.
    #[serde(default)]
    pub profile: Option<String>,
}

/// Params of `deployer.redeploy_vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeployVmParams {
    pub user_id: UserId,
    /// The service profile the VM runs from now on (a profile the server knows).
    pub profile: String,
}

/// The longest extension one `deployer.extend_vm` may ask for: ten years. Why a bound: a few digits too many is a
/// slip, not a plan, and the server refuses it rather than set an expiry nobody will ever see.
pub const MAX_EXTEND_DAYS: u32 = 3650;

/// Params of `deployer.extend_vm`: exactly one of `days` (1 to [`MAX_EXTEND_DAYS`]) and `never`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendVmParams {
    pub user_id: UserId,
    /// Move the expiry this many days later (from now when it already passed).
    #[serde(default)]
    pub days: Option<u32>,
    /// The VM never expires.
    #[serde(default)]
    pub never: bool,
}

/// Health of a ready VM as the server's health watch sees it through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// The public `/health` answered 200 on the last probe.
    Healthy,
    /// The last probe got another status, an error, or no answer within its deadline.
    Unreachable,
}

spelled!(HealthState {
    Healthy => "healthy",
    Unreachable => "unreachable",
});

/// The health watch's record of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmHealth {
    pub state: HealthState,
    /// Since when the VM is in `state` (unix seconds): "down since 14:02".
    pub since: i64,
    /// When it was last probed.
    pub checked_at: i64,
    /// The last probe that answered 200 (`None`: never seen healthy).
    pub last_healthy_at: Option<i64>,
    /// Why the last probe failed (`None` while healthy).
    pub last_error: Option<String>,
}

/// Params of `deployer.list_vms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListVmsParams {
    /// Only users whose name starts with this.
    #[serde(default)]
    pub filter: Option<String>,
}

/// Params of `deployer.check_health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckHealthParams {
    /// Probe only this user's VM (default: every ready VM).
    #[serde(default)]
    pub user_id: Option<UserId>,
}

/// Live VMs (not decommissioned), in username order, with their health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmList {
    pub vms: Vec<VmRecord>,
}

/// Result of `deployer.get_vm`: the user's current VM (if any), key and gateway facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmDetails {
    pub user_id: UserId,
    pub vm: Option<VmRecord>,
    /// Every other VM row of the user, newest first: decommissioned VMs, and rows of failed
    /// attempts a later one did not adopt (another backend), so none is hidden.
    pub history: Vec<VmRecord>,
    pub ssh_key_fingerprint: Option<String>,
    pub ssh_public_key: Option<String>,
}

/// Result of `deployer.vm_ssh_target`: where `ssh` reaches the user's live VM right now (ports
/// and IPs can change across restarts, so this asks the backend, not the record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmSshAccess {
    pub user_id: UserId,
    pub vm_name: String,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Login on the VM.
    pub login: String,
    /// `SHA256:…` fingerprint of the VM's host key, pinned on first contact by `wait_ssh`; null
    /// until then. A client must refuse a host whose key does not match it.
    pub host_key_fingerprint: Option<String>,
}

/// Result of `deployer.export_ssh_key` (audited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshKeyExport {
    pub user_id: UserId,
    pub public_key: String,
    /// OpenSSH private key.
    pub private_key: String,
    pub fingerprint: String,
}

/// Params of `deployer.forget_vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetVmParams {
    pub user_id: UserId,
    /// Forget without the backend's confirmation that the VM and gateway are gone (for a
    /// backend that cannot be asked). Never while a job is active for the user. Default false.
    #[serde(default)]
    pub force: bool,
}

/// Result of `deployer.forget_vm`: what was forgotten and on what grounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ForgetVmResult {
    pub user_id: UserId,
    pub forge_username: String,
    /// Whether `force` was given.
    pub forced: bool,
    /// The VM records removed (resource names, `<name> on <backend>`); empty when there was
    /// nothing left to forget.
    pub vms: Vec<String>,
    /// The gateway records removed (names).
    pub gateways: Vec<String>,
    /// Why forgetting was safe: per VM record, what the backend said, that it was never
    /// reached, or that `force` skipped the question.
    pub grounds: Vec<String>,
    /// What happened to the VM's OAuth app on Forge and its client secret.
    pub sso_app: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileParams {
    /// Remove orphans (audited). Default false: report only.
    #[serde(default)]
    pub fix: bool,
    // Backend to reconcile; default the configured one.
}

/// One backend resource in a reconcile report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceRef {
    /// `vm`, `gateway` or `oauth_app` (the VM's OAuth app on Forge, `backend` "forge").
    pub kind: String,
    pub name: String,
    pub user_id: Option<UserId>,
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReconcileReport {
    /// In the backend, not (or no longer) in sqlite.
    pub orphans: Vec<ResourceRef>,
    /// In sqlite as live, not in the backend.
    pub missing: Vec<ResourceRef>,
    /// Orphans removed (with `fix`).
    pub removed: Vec<ResourceRef>,
    /// Backends compared, by kind.
    #[serde(default)]
    pub checked: Vec<String>,
    /// Backends in use that could not be compared (a missing prerequisite, an inventory that
    /// failed), each with why. One such backend never fails the reconcile of the others.
    #[serde(default)]
    pub skipped: Vec<SkippedBackend>,
}

/// A backend reconcile did not compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SkippedBackend {
    pub backend: String,
    pub reason: String,
}
