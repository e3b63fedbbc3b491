//! Wire types. Timestamps are Unix seconds (UTC). Every type derives `JsonSchema`, which is where the
//! OpenRPC document gets its schemas from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Deployer-side id of a user record. Stable for the record's life; never reused.
pub type UserId = i64;

/// A person the deployer manages: their Forge identity and what we hold for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct User {
    pub user_id: UserId,
    /// The Forge login; also the DNS label of the person's demo URL.
    pub forge_username: String,
    pub display_name: Option<String>,
    pub email: String,
    /// Forge's numeric id of the account.
    pub forge_user_id: i64,
    /// True when the deployer created the Forge account, false when it adopted an existing one.
    pub forge_created: bool,
    /// True when a Forge API token for this user is held in the secret store.
    pub forge_token_set: bool,
    /// Why no token is held, when `forge_token_set` is false.
    pub forge_token_note: Option<String>,
    /// True when the initial password is held and can be revealed.
    pub initial_password_held: bool,
    /// False while `create_user` has not finished (it stopped part-way; calling it again resumes).
    pub setup_complete: bool,
    /// Coarse state of the person's demo VM, for listings.
    pub vm_status: VmStatus,
    /// Health of the live VM as the health watch last saw it (`None`: no ready VM, or not
    /// probed yet).
    #[serde(default)]
    pub vm_health: Option<crate::jobs::HealthState>,
    /// When the live VM expires (unix seconds; `None`: no live VM, or it never expires).
    #[serde(default)]
    pub vm_expires_at: Option<i64>,
    /// Since when the live VM is in its `vm_health` state (unix seconds): "down since 14:02".
    #[serde(default)]
    pub vm_health_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl User {
    /// How the Forge account came to be, or `None` while setup is incomplete: until `create_user`
    /// finishes, `forge_created` and `forge_user_id` are defaults (false, 0), not facts, and
    /// showing them would claim an adoption and an id that never happened.
    pub fn forge_account(&self) -> Option<(&'static str, i64)> {
        if !self.setup_complete || self.forge_user_id == 0 {
            return None;
        }
        Some((
            if self.forge_created {
                "created by the deployer"
            } else {
                "adopted (existed before)"
            },
            self.forge_user_id,
        ))
    }
}

/// Coarse VM state shown next to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    NoVm,
    Provisioning,
    Ready,
    Failed,
    Decommissioning,
    Decommissioned,
}

impl VmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::NoVm => "no_vm",
            VmStatus::Provisioning => "provisioning",
            VmStatus::Ready => "ready",
            VmStatus::Failed => "failed",
            VmStatus::Decommissioning => "decommissioning",
            VmStatus::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(s: &str) -> Option<VmStatus> {
        Some(match s {
            "no_vm" => VmStatus::NoVm,
            "provisioning" => VmStatus::Provisioning,
            "ready" => VmStatus::Ready,
            "failed" => VmStatus::Failed,
            "decommissioning" => VmStatus::Decommissioning,
            "decommissioned" => VmStatus::Decommissioned,
            _ => return None,
        })
    }
}

/// Params of `deployer.create_user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserParams {
    /// Forge login to create or adopt. See the username rules in the README.
    pub username: String,
    /// Full name shown on Forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Email for the Forge account; defaults to `<username>@<placeholder domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// When Forge refuses the account (`forge_conflict`, `forge_auth_rejected`) and holds none of it, remove the
    /// record this call made instead of keeping it pending for a repeat call: a batch line ends created or
    /// absent. Done by the server under the name's claim, so no other caller of the name can be between the
    /// refusal and the removal. Never a record an earlier call made, one whose Forge account exists, or after
    /// any other failure (Forge unreachable: a timed-out create may have happened, and only the held password
    /// opens it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discard_if_refused: bool,
}

/// Result of `deployer.create_user`. The password is shown here once; later only through the
/// audited `deployer.reveal_initial_password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateUserResult {
    pub user_id: UserId,
    pub forge_username: String,
    /// Null when an existing Forge account was adopted (its password is not known to us), and
    /// over the TCP listener, which never hands out a secret (reveal it over the local socket).
    pub initial_password: Option<String>,
    pub forge_token_set: bool,
    /// Why no token was minted, when `forge_token_set` is false.
    pub forge_token_note: Option<String>,
    /// True when the Forge account already existed and was adopted.
    pub adopted: bool,
    pub user: User,
}

/// Params naming one user by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIdParams {
    pub user_id: UserId,
}

/// Params of `deployer.find_user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FindUserParams {
    pub username: String,
}

/// Params of `deployer.list_users`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListUsersParams {
    /// Only users whose Forge username starts with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Opaque cursor from a previous page's `next_cursor`: the page after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Opaque cursor from a page's `prev_cursor`: the page just before it. Not with `cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Page size, 1..=500, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only users whose live VM expires before this time (unix seconds): "expiring within 7
    /// days" is now + 7 days. VMs that never expire never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_before: Option<i64>,
}

/// A page of users in username order. Pages are stable: inserts never shift a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsersPage {
    pub users: Vec<User>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Pass as `before` to get the previous page; absent on the first page.
    #[serde(default)]
    pub prev_cursor: Option<String>,
    /// Number of users matching the filter, over all pages.
    pub total: u64,
}

/// Result of `deployer.delete_user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeleteUserResult {
    pub user_id: UserId,
    pub forge_username: String,
    /// Always false: the Forge account is kept.
    pub forge_user_deleted: bool,
}

/// Result of `deployer.reveal_initial_password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevealPasswordResult {
    pub user_id: UserId,
    pub forge_username: String,
    pub initial_password: String,
}

/// Params of `deployer.secret_set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSetParams {
    /// Slot name `<context>/<name>`, e.g. `deployer/forge_admin_token`.
    pub slot: String,
    pub value: String,
}

/// Params naming one secret slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSlotParams {
    pub slot: String,
}

/// Params of `deployer.secret_list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretListParams {
    /// Only slots starting with this prefix, e.g. `deployer/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A secret's value. Only returned over the local unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretValue {
    pub slot: String,
    pub value: String,
}

/// Slot names, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretSlots {
    pub slots: Vec<String>,
}

/// Acknowledgement of a change that has nothing else to return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ack {
    pub ok: bool,
}

/// Params of methods that take none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Result of `deployer.server_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServerInfo {
    pub service: String,
    pub version: String,
    /// Forge base URL in use.
    pub forge_url: String,
    /// Forge's version as it answered this call; null when it did not answer.
    pub forge_version: Option<String>,
    /// Whether Forge answered `/version` during this call (null from older servers).
    #[serde(default)]
    pub forge_reachable: Option<bool>,
    /// Why Forge did not answer, when it did not.
    #[serde(default)]
    pub forge_error: Option<String>,
    pub data_dir: String,
    /// Which secret store backend is configured (`file` or `hero_proc`).
    pub secret_store: String,
    pub started_at: i64,
    pub users: u64,
    /// Service profiles a deploy or redeploy may name (empty from older servers).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// The profile used when a deploy names none.
    #[serde(default)]
    pub default_profile: Option<String>,
}

/// Body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub status: String,
    pub service: String,
    pub version: String,
}

/// One audit event. Append-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEvent {
    pub event_id: i64,
    pub at: i64,
    /// Who did it: a Forge username from the SSO edge, or `local:<unix user>` / `local:operator`.
    pub actor: String,
    /// What was done, e.g. `user.create`.
    pub action: String,
    /// What it was done to, e.g. `user:alice`.
    pub subject: String,
    /// `ok`, or `error:<kind>`.
    pub outcome: String,
    /// Human-readable detail. Never contains a secret.
    pub detail: Option<String>,
}

/// Params of `deployer.list_events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEventsParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Subject prefix, e.g. `user:alice` (which also matches `user:alice-b`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Exactly this user's events (subject `user:<name>`): unlike a `subject` prefix, `ann` is
    /// not also `anna`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Action prefix, e.g. `user.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Only events with an id below this (for paging backwards in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// 1..=500, default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventsPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for older events; absent when there are none.
    pub next_before: Option<i64>,
}

/// Result of `deployer.reset_forge_password`. The new password is shown here once and stored
/// as the user's initial password (so `reveal_initial_password` can show it again, audited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResetPasswordResult {
    pub user_id: UserId,
    pub forge_username: String,
    pub new_password: String,
}
