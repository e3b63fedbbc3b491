//! The compute backend trait, its request/result types, resource naming and [`BackendError`].
//!
//! Designed for a step-based, idempotent, resumable job runner:
//! * `deploy_*` first look for a resource of that name and adopt it, so a step re-run after a crash
//!   never makes a second VM or gateway;
//! * `delete_*` return `Ok(())` when the resource is already gone;
//! * `get_*` return `Ok(None)` for "does not exist";
//! * every error has a stable [`BackendError::code`] and [`BackendError::is_transient`].
//!
//! Every resource name carries the deployer's user id (`hero_u<user_id>_<grid name>`, see
//! [`ResourceName`]) so [`ComputeBackend::inventory`] can be reconciled against the database.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::process::shell_quote;
use crate::spec::VmSpec;
use crate::ssh::SshTarget;

/// Prefix of every resource name the deployer creates.
pub const NAME_PREFIX: &str = "hero_u";

/// A grid-safe resource name that carries the deployer user id: `hero_u<user_id>_<grid name>`.
///
/// Matches `^[a-zA-Z0-9_]+$` (the provider rejects anything else, hyphens included).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName {
    user_id: i64,
    grid_name: String,
}

impl ResourceName {
    /// Build the name for `user_id` and the user's grid name (SDK `username::grid_name`:
    /// the username with `-` turned into `_`).
    pub fn new(user_id: i64, grid_name: &str) -> Result<Self, BackendError> {
        if user_id < 0 {
            return Err(BackendError::InvalidName(format!(
                "user id {user_id} is negative"
            )));
        }
        if grid_name.is_empty()
            || !grid_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(BackendError::InvalidName(format!(
                "grid name {grid_name:?} must match ^[a-zA-Z0-9_]+$"
            )));
        }
        Ok(Self {
            user_id,
            grid_name: grid_name.to_string(),
        })
    }

    /// Parse `hero_u<digits>_<grid name>`; `None` for names the deployer did not make.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(NAME_PREFIX)?;
        let (id, grid) = rest.split_once('_')?;
        if id.is_empty()
            || !id.bytes().all(|b| b.is_ascii_digit())
            || (id.len() > 1 && id.starts_with('0'))
        {
            return None;
        }
        Self::new(id.parse().ok()?, grid).ok()
    }

    /// The deployer user id.
    pub fn user_id(&self) -> i64 {
        self.user_id
    }

    /// The user's grid name (the gateway label / URL prefix).
    pub fn grid_name(&self) -> &str {
        &self.grid_name
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{NAME_PREFIX}{}_{}", self.user_id, self.grid_name)
    }
}

impl TryFrom<String> for ResourceName {
    type Error = BackendError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
            .ok_or_else(|| BackendError::InvalidName(format!("{s:?} is not hero_u<id>_<name>")))
    }
}

impl From<ResourceName> for String {
    fn from(n: ResourceName) -> Self {
        n.to_string()
    }
}

/// Where a backend's child-process output goes (tofu lines, sshd errors…), for job events.
pub type OutputSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A sink that drops everything.
pub fn discard_output() -> OutputSink {
    Arc::new(|_| {})
}

/// What to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRequest {
    /// Resource name (also the deployment/network name on the grid).
    pub name: ResourceName,
    /// CPU, memory, disks, image.
    pub spec: VmSpec,
    /// `authorized_keys` line of the user's key (`SSH_KEY` on the grid).
    pub ssh_public_key: String,
    /// The node chosen by node selection (grid backends require it; the local backend ignores it).
    pub node_id: Option<u32>,
}

/// Where a VM keeps the secrets its Hero stack reads (the SSO edge's client secret, the owner…),
/// which the deployer writes over SSH (`configure_sso`). How each is written is the server's
/// `provision/vm_secrets.rs`; the backend only says which one its VMs have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmSecretStore {
    /// The Hero stack's hero_proc secret service on the VM (grid backends).
    #[default]
    HeroProc,
    /// The encrypted file store of the sandbox's own hero_proxy, `$HERO_SECRETS_DIR`, written with
    /// `$HERO_BIN_DIR/hero_proxy secret set` (the local backend).
    ProxyFiles,
}

/// What post-deploy steps need to know about a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Resource name.
    pub name: ResourceName,
    /// Which backend made it (`local`, `opentofu`, `hero_compute`).
    pub backend: String,
    /// Where and as whom to SSH.
    pub ssh: SshTarget,
    /// Private IP inside the grid network (the local sandbox reports 127.0.0.1).
    pub private_ip: Option<String>,
    /// Mycelium IPv6, once known (`None` while the grid has not reported it yet: poll `get_vm`).
    pub mycelium_ip: Option<String>,
    /// The URL the web gateway must forward to (the VM's port 9988 or the sandbox's stand-in).
    pub web_backend_url: String,
    /// Remote path of the per-user manifest (`services.toml`).
    pub manifest_path: String,
    /// Remote directory to upload and run the bootstrap script in.
    pub work_dir: String,
    /// A remote file to source before running commands (the sandbox's env: its port 9988 etc.).
    pub env_file: Option<String>,
    /// Grid node (grid backends).
    pub node_id: Option<u32>,
    /// Backend-specific id (contract/deployment id, sandbox dir…), for the VM record.
    pub backend_id: Option<String>,
    /// Where the VM's secrets go (absent in records written before it existed: grid VMs).
    #[serde(default)]
    pub secret_store: VmSecretStore,
}

impl VmInfo {
    /// Wrap a command so it runs in [`VmInfo::work_dir`] with [`VmInfo::env_file`] sourced.
    pub fn wrap_command(&self, command: &str) -> String {
        let mut s = format!(
            "mkdir -p {d} && cd {d} && ",
            d = shell_quote(&self.work_dir)
        );
        if let Some(env) = &self.env_file {
            s.push_str(&format!(". {} && ", shell_quote(env)));
        }
        s.push_str(command);
        s
    }

    /// The remote path where the bootstrap script is uploaded.
    pub fn bootstrap_path(&self) -> String {
        format!("{}/setup-binaries.sh", self.work_dir.trim_end_matches('/'))
    }

    /// The command that runs the uploaded bootstrap script (see [`VmInfo::bootstrap_path`]).
    pub fn bootstrap_command(&self) -> String {
        self.wrap_command(&format!("bash {}", shell_quote(&self.bootstrap_path())))
    }
}

/// A web gateway to deploy: `<host_label>.<domain>` → `backend_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRequest {
    /// Resource name (same as the VM's: one gateway per user).
    pub name: ResourceName,
    /// The public host label, locally `<label>.localhost`. The `opentofu` backend decides its
    /// label itself from `name` (`grid_names::gateway_labels`: a name contract, unique
    /// network-wide, with a fallback) and uses this one only if it is one of those.
    pub host_label: String,
    /// Where to forward (from [`VmInfo::web_backend_url`]).
    pub backend_url: String,
    /// Gateway node (grid backends): the VM's node, so it is in the VM's network.
    pub node_id: Option<u32>,
}

/// A deployed gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// Resource name.
    pub name: ResourceName,
    /// Full host name (`alice.gent01.grid.tf`, `alice.localhost`).
    pub fqdn: String,
    /// The shareable URL (`https://alice.gent01.grid.tf/`, `http://alice.localhost:8080/`).
    pub url: String,
    /// Where it forwards.
    pub backend_url: String,
    /// Where to actually connect for [`GatewayInfo::url`] when the name does not resolve
    /// (`127.0.0.1:<port>` for the local gateway; send `Host: <fqdn>`). `None` on the grid.
    pub connect_addr: Option<String>,
}

/// Kind of an inventory resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A VM / sandbox.
    Vm,
    /// A web gateway / route.
    Gateway,
}

/// One resource a backend holds, for reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// VM or gateway.
    pub kind: ResourceKind,
    /// The raw name as the backend knows it.
    pub raw_name: String,
    /// Parsed deployer name; `None` if the name is not one of ours (reported, never touched).
    pub name: Option<ResourceName>,
    /// Human detail (state, port, node…).
    pub detail: String,
}

/// Errors of compute backends.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A name that is not `hero_u<id>_<grid name>` or not grid-safe.
    #[error("invalid resource name: {0}")]
    InvalidName(String),
    /// Misconfiguration (missing binary, bad path, missing node id…). Not retried.
    #[error("backend misconfigured: {0}")]
    Config(String),
    /// The backend did not answer in time.
    #[error("{op} timed out: {detail}")]
    Timeout {
        /// Operation.
        op: String,
        /// Detail.
        detail: String,
    },
    /// The backend is unreachable or answered a server error (5xx): retry later.
    #[error("backend unavailable during {op}: {detail}")]
    Unavailable {
        /// Operation.
        op: String,
        /// Detail.
        detail: String,
    },
    /// The backend refused the request (4xx-like, validation). Not retried.
    #[error("backend rejected {op}: {detail}")]
    Rejected {
        /// Operation.
        op: String,
        /// Detail.
        detail: String,
    },
    /// The public name is already taken (grid-wide name contract, or local route of another user).
    #[error("gateway name {label:?} is already taken{by}")]
    NameTaken {
        /// The label.
        label: String,
        /// " by …" or empty.
        by: String,
    },
    /// A child process (tofu, sshd…) failed; `tail` holds its last output lines.
    #[error("{tool} failed with {status}: {}", tail.join(" | "))]
    ToolFailed {
        /// Command (no secrets in it).
        tool: String,
        /// Exit status text.
        status: String,
        /// Last output lines.
        tail: Vec<String>,
        /// Whether the output looks like a transient grid problem (timeouts, RMB, 5xx).
        transient: bool,
    },
    /// hero_compute does not offer a method we need.
    #[error("hero_compute at {socket} lacks required methods: {}", missing.join(", "))]
    MissingMethods {
        /// Socket path.
        socket: String,
        /// Method names.
        missing: Vec<String>,
    },
    /// An answer with an unexpected shape.
    #[error("unexpected answer from {op}: {detail}")]
    Protocol {
        /// Operation.
        op: String,
        /// Detail.
        detail: String,
    },
    /// Local file system trouble.
    #[error("I/O error at {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A fault injected by a test (`test-hooks` feature).
    #[error("injected fault: {0}")]
    Injected(String),
}

impl BackendError {
    /// Stable error code, for job events and RPC errors.
    pub fn code(&self) -> &'static str {
        match self {
            BackendError::InvalidName(_) => "backend.invalid_name",
            BackendError::Config(_) => "backend.config",
            BackendError::Timeout { .. } => "backend.timeout",
            BackendError::Unavailable { .. } => "backend.unavailable",
            BackendError::Rejected { .. } => "backend.rejected",
            BackendError::NameTaken { .. } => "backend.name_taken",
            BackendError::ToolFailed { .. } => "backend.tool_failed",
            BackendError::MissingMethods { .. } => "backend.missing_methods",
            BackendError::Protocol { .. } => "backend.protocol",
            BackendError::Io { .. } => "backend.io",
            BackendError::Injected(_) => "backend.injected",
        }
    }

    /// Retry with backoff? Timeouts, unavailability and tool failures that look transient: yes.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Timeout { .. } | BackendError::Unavailable { .. } => true,
            BackendError::ToolFailed { transient, .. } => *transient,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.as_ref().display().to_string();
        move |source| BackendError::Io { path, source }
    }
}

/// Writes `contents` to `path` whole or not at all: to `<path>.tmp`, then a rename over `path`. Why: every file a
/// backend keeps is read back after a crash, and one cut mid-write (a truncated port, a half record) was taken
/// for a different value or for none.
pub(crate) fn replace_file(path: &std::path::Path, contents: &[u8]) -> Result<(), BackendError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, contents).map_err(BackendError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(BackendError::io(path))
}

/// Where a backend runs a VM, and what follows from it for the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On a ThreeFold Grid node: a node is selected (or pinned with `node_id`), and gateway
    /// names are grid names (`<grid name>.<gateway domain>`).
    GridNode,
    /// On this machine (the local sandbox): there is no node to select or pin, and the gateway
    /// host label is the user's name (`<username>.localhost`).
    ThisMachine,
}

impl Placement {
    /// Whether a node can be selected or pinned for a VM placed this way.
    pub fn has_nodes(self) -> bool {
        self == Placement::GridNode
    }

    /// The gateway's host label for the VM `name` of `username`.
    pub fn host_label(self, name: &ResourceName, username: &str) -> String {
        match self {
            Placement::GridNode => name.grid_name().to_owned(),
            Placement::ThisMachine => username.to_owned(),
        }
    }
}

/// A place to run VMs and web gateways. See the module docs for the idempotency contract.
#[async_trait]
pub trait ComputeBackend: Send + Sync {
    /// `local`, `opentofu` or `hero_compute`.
    fn kind(&self) -> &'static str;
    /// The longest one call (`deploy_vm`, `delete_gateway`…) may legitimately take, when it is long enough to
    /// matter: a step that calls the backend gives it at least this much before its own deadline gives up (and so
    /// interrupts it). `None`: the step's own deadline is ample.
    fn longest_call(&self) -> Option<Duration> {
        None
    }
    /// Where this backend puts a VM. The pipeline asks this instead of comparing [`Self::kind`]
    /// with a name, so a new backend (or a stand-in) says what it is in one place.
    fn placement(&self) -> Placement {
        Placement::GridNode
    }

    /// A missing prerequisite (mnemonic, binary, socket…) as a precise error, checked without
    /// the network, so a job can be refused when it is created rather than fail steps later.
    fn check_prerequisites(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// [`Self::check_prerequisites`] for a backend that must first read something locally to
    /// know (a backend built on first use reads its mnemonic from the secret store). Still no
    /// network. The server calls this one when it creates a job.
    async fn prerequisites(&self) -> Result<(), BackendError> {
        self.check_prerequisites()
    }

    /// Deploy a VM, or adopt the existing one of that name. Child-process output goes to `out`.
    async fn deploy_vm(&self, req: &VmRequest, out: OutputSink) -> Result<VmInfo, BackendError>;

    /// The VM of that name, if it exists.
    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError>;

    /// What of `name` the backend still holds whatever [`Self::get_vm`] and [`Self::get_gateway`] answer: a
    /// resource a half-finished deploy or delete left (an opentofu state holding only the network). `vm forget`
    /// refuses while anything is listed: such a resource runs on, and costs, with no record left to remove it.
    /// Required, not defaulted, so a wrapper cannot answer "nothing" for the backend it wraps.
    async fn remains(&self, name: &ResourceName) -> Result<Vec<String>, BackendError>;

    /// Delete the VM and everything that belongs to it; `Ok` if already gone.
    async fn delete_vm(&self, name: &ResourceName, out: OutputSink) -> Result<(), BackendError>;

    /// Deploy a web gateway, or adopt the existing one of that name.
    async fn deploy_gateway(
        &self,
        req: &GatewayRequest,
        out: OutputSink,
    ) -> Result<GatewayInfo, BackendError>;

    /// The gateway of that name, if it exists.
    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError>;

    /// Delete the gateway; `Ok` if already gone.
    async fn delete_gateway(
        &self,
        name: &ResourceName,
        out: OutputSink,
    ) -> Result<(), BackendError>;

    /// Everything this backend holds, ours or not, for reconcile.
    async fn inventory(&self) -> Result<Vec<Resource>, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_foreign_ones() {
        let n = ResourceName::new(42, "jan_de_vries").unwrap();
        assert_eq!(n.to_string(), "hero_u42_jan_de_vries");
        assert_eq!(
            ResourceName::parse("hero_u42_jan_de_vries"),
            Some(n.clone())
        );
        assert_eq!(n.user_id(), 42);
        assert_eq!(n.grid_name(), "jan_de_vries");
        for bad in [
            "hero_u_x",
            "hero_ux_y",
            "herou1_x",
            "hero_u1_",
            "hero_u1_a-b",
            "hero_u01_a",
            "vm",
        ] {
            assert_eq!(ResourceName::parse(bad), None, "{bad}");
        }
        assert!(ResourceName::new(1, "a-b").is_err());
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"hero_u42_jan_de_vries\"");
        let back: ResourceName = serde_json::from_str(&json).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn wraps_commands_with_env_and_dir() {
        let vm = VmInfo {
            name: ResourceName::new(1, "a").unwrap(),
            backend: "local".into(),
            ssh: SshTarget {
                host: "127.0.0.1".into(),
                port: 22,
                user: "root".into(),
            },
            private_ip: None,
            mycelium_ip: None,
            web_backend_url: "http://127.0.0.1:1".into(),
            manifest_path: "/x/services.toml".into(),
            work_dir: "/w d".into(),
            env_file: Some("/w d/env".into()),
            node_id: None,
            backend_id: None,
            secret_store: Default::default(),
        };
        assert_eq!(
            vm.bootstrap_command(),
            "mkdir -p '/w d' && cd '/w d' && . '/w d/env' && bash '/w d/setup-binaries.sh'"
        );
    }

    #[test]
    fn codes_and_transience() {
        let t = BackendError::Timeout {
            op: "deploy_vm".into(),
            detail: "x".into(),
        };
        assert!(t.is_transient());
        assert_eq!(t.code(), "backend.timeout");
        assert!(!BackendError::Config("x".into()).is_transient());
    }
}
