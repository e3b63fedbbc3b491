//! The `opentofu` backend: one working directory per user with a generated `main.tf.json` for the
//! `threefoldtech/grid` provider, driven by the `tofu` CLI as a child process.
//!
//! * Config generation is a pure function ([`render_main_tf_json`]) checked by golden files and,
//!   in tests, by a walk against the provider's vendored schema ([`crate::provider_schema`]) over
//!   the whole username space. Names come from [`crate::grid_names`] only.
//! * The provider is pinned exactly ([`crate::provider_pin`]); after every `tofu init` the schema
//!   of the provider actually installed (`tofu providers schema -json`) is read and a config it
//!   does not accept is refused before `apply`, naming the attribute.
//! * The child gets a clean environment ([`child_env`]): a stray `SUBSTRATE_URL`, `RELAY_URL`,
//!   `PROXY_URL`, `KEY_TYPE`, `NETWORK` or `TF_LOG` in the server's environment would silently
//!   change what the provider does. The mnemonic is given to the child only, as env `MNEMONIC`
//!   (the provider's variable): never in `main.tf.json`, never on a command line, redacted from
//!   streamed output.
//! * The provider's `network` is always set: it silently falls back to `dev` otherwise.
//! * A gateway name taken on the network is recognised by TFChain's own error (`NameExists`, as
//!   the grid client and provider report it) and the next label of
//!   [`crate::grid_names::gateway_labels`] is tried.
//! * Random values (mycelium key, mycelium IP seed) come from the injected RNG once per user and are
//!   persisted in the working dir (`desired.json`), so re-applies are stable and a resumed job
//!   converges on the same VM. The working dir (tofu state and the provider's `state.json`) lives
//!   under the configured root and survives restarts; it is removed only after a successful destroy.
//! * Layout follows the provider's proven pattern (`integrationtests/gateway_name_private`): the
//!   network, the VM and the name proxy on the same node; the proxy joins the network and forwards
//!   to `http://<vms[0].ip>:9988`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use crate::compute::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Resource, ResourceKind,
    ResourceName, VmInfo, VmRequest,
};
use crate::graceful_child::GracefulChild;
use crate::grid_names::{gateway_label_problem, gateway_labels, GridNames};
use crate::gridproxy::Network;
use crate::provider_pin::{default_version, ProviderVersion};
use crate::provider_schema::{check_config, grid_client_rules, ProviderSchema, Violation};
use crate::spec::VmSpec;
use crate::ssh::SshTarget;

/// Terraform-local names of the three resources (one working dir per user, so fixed).
pub const TF_NETWORK: &str = "net";
/// See [`TF_NETWORK`].
pub const TF_DEPLOYMENT: &str = "vm";
/// See [`TF_NETWORK`].
pub const TF_GATEWAY: &str = "gw";

/// Everything that goes into one user's `main.tf.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TfInputs {
    /// Resource name; the grid names derive from it ([`GridNames::for_resource`]).
    pub name: ResourceName,
    /// Grid network for the provider block.
    pub network: Network,
    /// Node for the network, the VM and the gateway.
    pub node_id: u32,
    /// The VM spec.
    pub spec: VmSpec,
    /// `SSH_KEY` for the VM.
    pub ssh_public_key: String,
    /// Hex of 32 random bytes: the network's mycelium key on `node_id`.
    pub mycelium_key_hex: String,
    /// Hex of 6 random bytes: the VM's mycelium IP seed.
    pub mycelium_ip_seed_hex: String,
    /// Private range of the network (a /16).
    pub ip_range: String,
    /// The VM's web port the gateway forwards to (9988, hero_router).
    pub web_port: u16,
    /// Name-proxy label (one of [`gateway_labels`]), if a gateway is wanted.
    pub gateway_label: Option<String>,
    /// Exact provider version (`1.11.2`); `None` (working dirs from before the pin) renders the
    /// network's [`default_version`].
    pub provider_version: Option<String>,
}

impl TfInputs {
    /// The grid names of this user's resources.
    pub fn grid_names(&self) -> GridNames {
        GridNames::for_resource(&self.name)
    }

    /// The `grid_network` name.
    pub fn network_name(&self) -> String {
        self.grid_names().network
    }

    /// The exact `required_providers` constraint (`= 1.11.2`).
    pub fn provider_constraint(&self) -> String {
        match self.provider_version.as_deref().map(ProviderVersion::parse) {
            Some(Ok(v)) => v.constraint(),
            // An unparsable stored value is written as is, so the schema walk reports it.
            Some(Err(_)) => self.provider_version.clone().unwrap_or_default(),
            None => default_version(self.network).constraint(),
        }
    }
}

/// Render `main.tf.json` (Terraform JSON syntax). Pure: same inputs, same bytes.
pub fn render_main_tf_json(i: &TfInputs) -> Value {
    let names = i.grid_names();
    let name = names.deployment.clone();
    let net = names.network.clone();
    let disk = names.disk;
    let node_key = i.node_id.to_string();
    let provider_req = json!({
        "source": crate::provider_schema::PROVIDER_SOURCE,
        "version": i.provider_constraint(),
    });
    let mut resource = json!({
        "grid_network": {
            TF_NETWORK: {
                "name": net,
                "nodes": [i.node_id],
                "ip_range": i.ip_range,
                "mycelium_keys": { node_key: i.mycelium_key_hex },
            }
        },
        "grid_deployment": {
            TF_DEPLOYMENT: {
                "node": i.node_id,
                "name": name,
                "network_name": format!("${{grid_network.{TF_NETWORK}.name}}"),
                "disks": [{ "name": disk, "size": i.spec.disk_gb }],
                "vms": [{
                    "name": name,
                    "flist": i.spec.flist,
                    "entrypoint": i.spec.entrypoint,
                    "cpu": i.spec.cpu,
                    "memory": i.spec.memory_mb,
                    "rootfs_size": i.spec.rootfs_mb,
                    "mounts": [{ "name": disk, "mount_point": "/data" }],
                    "env_vars": { "SSH_KEY": i.ssh_public_key.trim() },
                    "mycelium_ip_seed": i.mycelium_ip_seed_hex,
                    "publicip": i.spec.public_ip,
                    "planetary": i.spec.planetary,
                }],
            }
        }
    });
    let mut output = json!({
        "vm_ip": { "value": format!("${{grid_deployment.{TF_DEPLOYMENT}.vms[0].ip}}") },
        "mycelium_ip": { "value": format!("${{grid_deployment.{TF_DEPLOYMENT}.vms[0].mycelium_ip}}") },
        "node_id": { "value": format!("${{grid_deployment.{TF_DEPLOYMENT}.node}}") },
    });
    if let Some(label) = &i.gateway_label {
        resource["grid_name_proxy"] = json!({
            TF_GATEWAY: {
                "node": i.node_id,
                "name": label,
                "backends": [format!("http://${{grid_deployment.{TF_DEPLOYMENT}.vms[0].ip}}:{}", i.web_port)],
                "network": format!("${{grid_network.{TF_NETWORK}.name}}"),
                "tls_passthrough": false,
            }
        });
        output["fqdn"] = json!({ "value": format!("${{grid_name_proxy.{TF_GATEWAY}.fqdn}}") });
    }
    json!({
        "terraform": { "required_providers": { "grid": provider_req } },
        "provider": { "grid": { "network": i.network.as_str() } },
        "resource": resource,
        "output": output,
    })
}

/// Configuration of the OpenTofu backend.
#[derive(Clone)]
pub struct OpenTofuConfig {
    /// Root of the per-user working dirs (`<root>/<resource name>/`).
    pub root: PathBuf,
    /// The `tofu` binary (default `tofu`, looked up in `PATH`).
    pub tofu_bin: PathBuf,
    /// Grid network.
    pub network: Network,
    /// The TFChain mnemonic (from the secret store `deployer/tfgrid_mnemonic`); child env only.
    pub mnemonic: Zeroizing<String>,
    /// Extra environment for the child (e.g. `TF_PLUGIN_CACHE_DIR`). Never put secrets here.
    /// Variables the provider or OpenTofu read to change behaviour ([`FORBIDDEN_EXTRA_ENV`]) are
    /// refused.
    pub extra_env: Vec<(String, String)>,
    /// Exact provider version (`1.11.2`, `1.11.2-qa`…); `None` = [`default_version`] of the
    /// network. Its channel must match the network ([`ProviderVersion::check_network`]).
    pub provider_version: Option<String>,
    /// The network's private range.
    pub ip_range: String,
    /// VM web port the gateway forwards to.
    pub web_port: u16,
    /// SSH user on the VM (the official flists authorize `SSH_KEY` for root).
    pub ssh_user: String,
    /// Remote manifest path (`~driver/hero/cfg/cockpit/services.toml`).
    pub manifest_path: String,
    /// Remote directory for the bootstrap script.
    pub work_dir: String,
    /// Time limit of `init`/`output` and of `apply`/`destroy` (the provider's own default create
    /// timeout is 45 min).
    pub short_timeout: Duration,
    /// See [`OpenTofuConfig::short_timeout`].
    pub apply_timeout: Duration,
}

impl std::fmt::Debug for OpenTofuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTofuConfig")
            .field("root", &self.root)
            .field("tofu_bin", &self.tofu_bin)
            .field("network", &self.network)
            .field("mnemonic", &"<redacted>")
            .field("provider_version", &self.provider_version)
            .finish()
    }
}

impl OpenTofuConfig {
    /// Defaults for `root`, `network` and the mnemonic.
    pub fn new(root: impl Into<PathBuf>, network: Network, mnemonic: Zeroizing<String>) -> Self {
        Self {
            root: root.into(),
            tofu_bin: PathBuf::from("tofu"),
            network,
            mnemonic,
            extra_env: Vec::new(),
            provider_version: None,
            ip_range: "10.20.0.0/16".into(),
            web_port: 9988,
            ssh_user: "root".into(),
            manifest_path: "/home/driver/hero/cfg/cockpit/services.toml".into(),
            work_dir: "/root/hero_bootstrap".into(),
            short_timeout: DEFAULT_SHORT_TIMEOUT,
            apply_timeout: DEFAULT_APPLY_TIMEOUT,
        }
    }

    /// The longest one backend call may take with these timeouts: `init`, the schema read and `output` (short
    /// each) and `apply`.
    pub fn longest_call(&self) -> Duration {
        longest_call_with(self.short_timeout, self.apply_timeout)
    }
}

/// The longest one backend call may take with timeouts `short` and `apply` (see [`OpenTofuConfig::longest_call`]).
pub fn longest_call_with(short: Duration, apply: Duration) -> Duration {
    short * 3 + apply
}

/// `tofu init`, `providers schema`, `output`, `destroy` of one name: minutes at most.
pub const DEFAULT_SHORT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `tofu apply`: the provider's own create timeout is 45 minutes.
pub const DEFAULT_APPLY_TIMEOUT: Duration = Duration::from_secs(50 * 60);

/// Parent-environment variables the `tofu` child keeps, and why: `PATH` (tofu finds nothing else
/// through it, but a provider may exec helpers), `HOME` (the CLI config `~/.tofurc` and plugin
/// dirs), `TMPDIR`, the TLS trust overrides and the standard HTTP proxy variables (to reach the
/// registry and TFChain from behind a proxy). Everything else is dropped: the provider reads
/// `NETWORK`, `SUBSTRATE_URL`, `RELAY_URL`, `PROXY_URL`, `KEY_TYPE`, `RMB_TIMEOUT`, `MNEMONIC(S)`
/// from the environment, and OpenTofu reads `TF_*`.
pub const INHERITED_ENV: [&str; 11] = [
    "PATH",
    "HOME",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
];

/// Variables the child sets itself or must never get from configuration: the provider's env
/// defaults and OpenTofu's behaviour switches. `TF_PLUGIN_CACHE_DIR`, `TF_CLI_CONFIG_FILE` and
/// `TF_DATA_DIR` stay allowed in [`OpenTofuConfig::extra_env`].
pub const FORBIDDEN_EXTRA_ENV: [&str; 11] = [
    "MNEMONIC",
    "MNEMONICS",
    "NETWORK",
    "SUBSTRATE_URL",
    "RELAY_URL",
    "PROXY_URL",
    "GRAPHQL_URL",
    "KEY_TYPE",
    "RMB_TIMEOUT",
    "TF_INPUT",
    "TF_IN_AUTOMATION",
];

fn forbidden_extra(key: &str) -> bool {
    FORBIDDEN_EXTRA_ENV.contains(&key)
        || key.starts_with("TF_LOG")
        || key.starts_with("TF_VAR_")
        || key.starts_with("TF_CLI_ARGS")
}

/// The whole environment of a `tofu` child: [`INHERITED_ENV`] from `parent`, then `extra`
/// (minus anything [`forbidden_extra`]), then `TF_IN_AUTOMATION`, `TF_INPUT` and `MNEMONIC`.
/// Pure, so the allow-list is tested on hostile parent environments.
pub fn child_env(
    parent: impl IntoIterator<Item = (String, String)>,
    extra: &[(String, String)],
    mnemonic: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = parent
        .into_iter()
        .filter(|(k, _)| INHERITED_ENV.contains(&k.as_str()))
        .collect();
    for (k, v) in extra {
        if !forbidden_extra(k) {
            out.retain(|(x, _)| x != k);
            out.push((k.clone(), v.clone()));
        }
    }
    out.push(("TF_IN_AUTOMATION".into(), "1".into()));
    out.push(("TF_INPUT".into(), "0".into()));
    out.push(("MNEMONIC".into(), mnemonic.to_string()));
    out
}

/// This process's environment as UTF-8 pairs. `std::env::vars` panics on a non-UTF-8 entry;
/// such entries are skipped (none of [`INHERITED_ENV`] is useful when not UTF-8).
fn parent_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

impl OpenTofuConfig {
    /// The exact provider version in use, checked against the network's release channel.
    pub fn resolved_provider_version(&self) -> Result<ProviderVersion, BackendError> {
        let v = match &self.provider_version {
            Some(s) => ProviderVersion::parse(s)
                .map_err(|e| BackendError::Config(format!("opentofu.provider_version: {e}")))?,
            None => default_version(self.network),
        };
        v.check_network(self.network)
            .map_err(|e| BackendError::Config(format!("opentofu.provider_version: {e}")))?;
        Ok(v)
    }

    /// Every prerequisite that can be checked without the network, each reported precisely:
    /// the mnemonic is present, the `tofu` binary exists and is executable, the provider version
    /// fits the network, `extra_env` sets nothing the provider reads. For the server to refuse a
    /// job at creation instead of failing it at `select_node` after gridproxy retries.
    pub fn check_prerequisites(&self) -> Result<(), BackendError> {
        if self.mnemonic.trim().is_empty() {
            return Err(BackendError::Config(
                "opentofu backend: no TFGrid mnemonic is configured (the provider needs it to sign contracts)".into(),
            ));
        }
        find_executable(&self.tofu_bin)?;
        crate::run_lock::check_installed()?;
        self.resolved_provider_version()?;
        if let Some((k, _)) = self.extra_env.iter().find(|(k, _)| forbidden_extra(k)) {
            return Err(BackendError::Config(format!(
                "opentofu.extra_env sets {k}, which the provider or OpenTofu reads to change what it does; remove it"
            )));
        }
        Ok(())
    }
}

/// Resolve `bin` like `execvp` would (a path with `/` as is, else each `PATH` entry) and check it
/// is an executable file.
pub fn find_executable(bin: &Path) -> Result<PathBuf, BackendError> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if bin.components().count() > 1 || bin.is_absolute() {
        if is_exec(bin) {
            return Ok(bin.to_path_buf());
        }
        return Err(BackendError::Config(format!(
            "opentofu backend: the tofu binary {} does not exist or is not executable",
            bin.display()
        )));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(bin);
        if is_exec(&candidate) {
            return Ok(candidate);
        }
    }
    Err(BackendError::Config(format!(
        "opentofu backend: {} is not found in PATH (install OpenTofu or set opentofu.binary)",
        bin.display()
    )))
}

/// The chain error TFChain returns when a name contract's name is registered already
/// (`pallet-smart-contract` `Error::NameExists`). How it reaches `tofu`'s output: the tfchain Go
/// client's `checkForError` returns the `SmartContractModule` error's name
/// (`clients/tfchain-client-go/utils.go`), its `CreateNameContract` wraps it as
/// `failed to create contract: NameExists` (`contract.go`), the grid client returns that from
/// `GatewayNameDeployer.Deploy`, and the provider reports
/// `couldn't deploy name gateway with error: failed to create contract: NameExists`
/// (`internal/provider/resource_gateway_name.go`).
pub const CHAIN_NAME_EXISTS: &str = "NameExists";

/// Whether `tail` carries the provider's name-gateway diagnostic whose innermost cause (the last
/// `: `-separated part) is exactly TFChain's `NameExists`. Matches that diagnostic line only
/// (OpenTofu frames it with `│`), so a VM or disk error that merely mentions a name does not count.
pub fn chain_name_exists(tail: &[String]) -> bool {
    tail.iter().any(|l| {
        let l = l.trim_start_matches(|c: char| c == '│' || c == '|' || c.is_whitespace());
        [
            "couldn't deploy name gateway with error: ",
            "couldn't update name gateway with error: ",
        ]
        .iter()
        .any(|p| {
            l.strip_prefix("Error: ")
                .and_then(|r| r.strip_prefix(p))
                .and_then(|cause| cause.trim_end().rsplit(": ").next())
                .is_some_and(|innermost| innermost == CHAIN_NAME_EXISTS)
        })
    })
}

/// What this backend hands the provider outside `main.tf.json`: the mnemonic as env `MNEMONIC`,
/// which only an attribute named `mnemonic` reads (v1.11.1 has `mnemonics`, env `MNEMONICS`, and
/// would never see it), and `network`, which the config sets.
pub fn env_contract_violations(schema: &ProviderSchema) -> Vec<Violation> {
    ["mnemonic", "network"]
        .iter()
        .filter(|k| !schema.provider.attributes.contains_key(**k))
        .map(|k| Violation {
            path: format!("provider.grid.{k}"),
            problem: format!(
                "the provider has no `{k}` attribute (it has: {}); this backend passes the mnemonic as env MNEMONIC for `mnemonic`",
                schema.provider.attributes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
        .collect()
}

/// What the working dir wants deployed (persisted as `desired.json` before every apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Desired {
    inputs: TfInputs,
}

/// The OpenTofu backend.
pub struct OpenTofuBackend {
    cfg: OpenTofuConfig,
    rng: Mutex<Box<dyn RngCore + Send>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for OpenTofuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTofuBackend")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// Lines that suggest a retry can help (grid RMB timeouts, relay hiccups, 5xx…).
fn looks_transient(lines: &[String]) -> bool {
    const HINTS: [&str; 9] = [
        "timeout",
        "timed out",
        "deadline exceeded",
        "connection refused",
        "connection reset",
        "503",
        "502",
        "temporarily",
        "rmb",
    ];
    lines.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        HINTS.iter().any(|h| l.contains(h))
    })
}

/// A line of `tofu` output as it may be shown: ANSI colour (CSI) and OSC sequences removed, tabs as spaces, and no
/// other control or invisible formatting character (`peer_body::printable`). Why the last: provider and node
/// error text reaches job events and the dashboard, and a bidi override or a bare OSC there rewrites what an
/// operator reads.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    chars.next();
                    while let Some(d) = chars.next() {
                        if d == '\u{7}' {
                            break;
                        }
                        if d == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        if c == '\t' {
            out.push(' ');
        } else if crate::peer_body::printable(c) {
            out.push(c);
        }
    }
    out
}

/// The `init` invocation. `-upgrade` with an exact pin can only move a working dir to the pinned
/// version: without it a dir locked to an earlier version fails `init` after the pin changes.
const INIT_ARGS: &[&str] = &["init", "-input=false", "-upgrade"];

fn join_violations(v: &[Violation]) -> String {
    v.iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One `tofu output -json` value.
#[derive(Debug, Deserialize)]
struct OutputValue {
    value: Value,
}

impl OpenTofuBackend {
    /// A backend with `cfg`; `rng` supplies the mycelium keys and seeds (inject a seeded RNG in
    /// tests, `OsRng`/`StdRng::from_entropy()` in production).
    pub fn new(cfg: OpenTofuConfig, rng: Box<dyn RngCore + Send>) -> Self {
        Self {
            cfg,
            rng: Mutex::new(rng),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The working dir of `name`.
    pub fn work_dir(&self, name: &ResourceName) -> PathBuf {
        self.cfg.root.join(name.to_string())
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(p) => p.into_inner().entry(name.to_string()).or_default().clone(),
        }
    }

    fn random_hex(&self, n: usize) -> String {
        let mut buf = vec![0u8; n];
        match self.rng.lock() {
            Ok(mut r) => r.fill_bytes(&mut buf),
            Err(p) => p.into_inner().fill_bytes(&mut buf),
        }
        hex::encode(buf)
    }

    fn read_desired(&self, dir: &Path) -> Result<Option<Desired>, BackendError> {
        let p = dir.join("desired.json");
        match std::fs::read_to_string(&p) {
            Ok(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| BackendError::Protocol {
                    op: "read desired.json".into(),
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::io(&p)(e)),
        }
    }

    /// Persist `desired.json` and `main.tf.json` (atomically, desired first). Refuses a config
    /// that breaks the grid client's apply-time rules ([`grid_client_rules`]) before writing.
    fn write_config(&self, dir: &Path, d: &Desired) -> Result<(), BackendError> {
        self.write_config_checked(dir, d, true)
    }

    /// [`Self::write_config`]; `check_rules = false` only to destroy: a working dir written by an
    /// older version (e.g. a `_` gateway label) must still be destroyable.
    fn write_config_checked(
        &self,
        dir: &Path,
        d: &Desired,
        check_rules: bool,
    ) -> Result<(), BackendError> {
        let violations = if check_rules {
            grid_client_rules(&render_main_tf_json(&d.inputs))
        } else {
            Vec::new()
        };
        if !violations.is_empty() {
            return Err(BackendError::InvalidName(format!(
                "the grid would refuse this config: {}",
                join_violations(&violations)
            )));
        }
        std::fs::create_dir_all(dir).map_err(BackendError::io(dir))?;
        let write =
            |file: &str, v: String| crate::compute::replace_file(&dir.join(file), v.as_bytes());
        let desired = serde_json::to_string_pretty(d).map_err(|e| BackendError::Protocol {
            op: "write desired.json".into(),
            detail: e.to_string(),
        })?;
        write("desired.json", desired)?;
        let main = serde_json::to_string_pretty(&render_main_tf_json(&d.inputs)).map_err(|e| {
            BackendError::Protocol {
                op: "write main.tf.json".into(),
                detail: e.to_string(),
            }
        })?;
        write("main.tf.json", format!("{main}\n"))
    }

    /// Run `tofu <args>` in `dir` with `MNEMONIC` in its environment only; stream stdout/stderr
    /// lines (ANSI stripped, [`Self::secrets_of`] redacted) to `out`; return stdout lines.
    async fn tofu(
        &self,
        dir: &Path,
        args: &[&str],
        timeout: Duration,
        out: &OutputSink,
    ) -> Result<Vec<String>, BackendError> {
        let shown = format!("tofu {}", args.join(" "));
        if crate::run_lock::busy(dir) {
            out(&format!(
                "another tofu still runs in {} (one an earlier deployer process left running?): waiting up to {timeout:?} for it to finish",
                dir.display()
            ));
        }
        let mut cmd = crate::run_lock::locked_command(dir, &self.cfg.tofu_bin, timeout);
        let env = child_env(
            parent_env(),
            &self.cfg.extra_env,
            self.cfg.mnemonic.as_str(),
        );
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Interrupted, not killed, when this call is given up (timeout, cancel, deadline, server stop): see
        // `graceful_child`.
        let mut child = GracefulChild::spawn(&mut cmd, INTERRUPT_GRACE).map_err(|e| {
            BackendError::Config(format!("cannot run {}: {e}", self.cfg.tofu_bin.display()))
        })?;
        let (Some(stdout), Some(stderr)) =
            (child.child().stdout.take(), child.child().stderr.take())
        else {
            return Err(BackendError::Config("tofu child has no pipes".into()));
        };
        let secrets = self.secrets_of(dir);
        let clean = move |l: &str| -> String {
            let mut l = strip_ansi(l);
            for s in secrets.iter().filter(|s| !s.is_empty()) {
                if l.contains(s.as_str()) {
                    l = l.replace(s.as_str(), "<redacted>");
                }
            }
            l
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Piped>();
        tokio::spawn(read_lines(stdout, false, tx.clone()));
        tokio::spawn(read_lines(stderr, true, tx));
        let mut stdout_lines = Vec::new();
        let mut tail: Vec<String> = Vec::new();
        let run = async {
            while let Some(msg) = rx.recv().await {
                let (is_err, l) = match msg {
                    Piped::Line { stderr, text } => (stderr, text),
                    Piped::TooMuch => {
                        return Err(std::io::Error::other(format!(
                            "it printed more than {} MiB on stdout (child interrupted)",
                            MAX_STDOUT >> 20
                        )))
                    }
                };
                let l = clean(&l);
                let display = crate::lines::for_people(&l);
                out(&display);
                tail.push(display);
                if tail.len() > 30 {
                    tail.remove(0);
                }
                if !is_err {
                    stdout_lines.push(l);
                }
            }
            child.wait().await
        };
        let status = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(BackendError::Config(format!("waiting for {shown}: {e}")));
            }
            Err(_) => {
                return Err(BackendError::Timeout {
                    op: shown,
                    detail: format!("no result within {timeout:?} (child interrupted)"),
                })
            }
        };
        if status.code() == Some(crate::run_lock::BUSY_EXIT) {
            return Err(BackendError::Timeout {
                op: shown,
                detail: format!(
                    "another tofu held the working dir {} for all of {timeout:?}",
                    dir.display()
                ),
            });
        }
        if !status.success() {
            let transient = looks_transient(&tail);
            if args.first() == Some(&"apply") && chain_name_exists(&tail) {
                return Err(BackendError::NameTaken {
                    label: String::new(),
                    by: format!(" on the grid network (TFChain: {CHAIN_NAME_EXISTS})"),
                });
            }
            return Err(BackendError::ToolFailed {
                tool: shown,
                status: status.to_string(),
                tail,
                transient,
            });
        }
        Ok(stdout_lines)
    }

    /// What no line of a `tofu` run in `dir` may show: the mnemonic, and the VM network's mycelium key and IP
    /// seed. Why the last two: `apply` and `destroy` print the plan, and the provider marks neither as sensitive,
    /// so both reached job events, job errors and audit details (readable over TCP) and sqlite; the key is the
    /// node's mycelium identity, and with the seed it fixes the VM's mycelium address.
    fn secrets_of(&self, dir: &Path) -> Vec<Zeroizing<String>> {
        let mut secrets = vec![self.cfg.mnemonic.clone()];
        if let Ok(Some(d)) = self.read_desired(dir) {
            secrets.push(Zeroizing::new(d.inputs.mycelium_key_hex.clone()));
            secrets.push(Zeroizing::new(d.inputs.mycelium_ip_seed_hex.clone()));
        }
        secrets
    }

    /// `tofu init`, then the installed provider's schema check, then `tofu apply`.
    async fn init_and_apply(&self, dir: &Path, out: &OutputSink) -> Result<(), BackendError> {
        self.tofu(dir, INIT_ARGS, self.cfg.short_timeout, out)
            .await?;
        self.check_installed_schema(dir).await?;
        self.tofu(
            dir,
            &["apply", "-auto-approve", "-input=false"],
            self.cfg.apply_timeout,
            out,
        )
        .await?;
        Ok(())
    }

    /// Read `tofu providers schema -json` (the provider `init` installed) and refuse the working
    /// dir's `main.tf.json` if that provider does not accept it, naming every attribute at fault.
    async fn check_installed_schema(&self, dir: &Path) -> Result<(), BackendError> {
        let lines = self
            .tofu(
                dir,
                &["providers", "schema", "-json"],
                self.cfg.short_timeout,
                &crate::compute::discard_output(),
            )
            .await?;
        let doc: Value =
            serde_json::from_str(&lines.join("\n")).map_err(|e| BackendError::Protocol {
                op: "tofu providers schema -json".into(),
                detail: e.to_string(),
            })?;
        let schema = ProviderSchema::from_tofu_json(&doc).map_err(|e| BackendError::Protocol {
            op: "tofu providers schema -json".into(),
            detail: e.to_string(),
        })?;
        let p = dir.join("main.tf.json");
        let cfg: Value = std::fs::read_to_string(&p)
            .map_err(BackendError::io(&p))
            .and_then(|t| {
                serde_json::from_str(&t).map_err(|e| BackendError::Protocol {
                    op: "read main.tf.json".into(),
                    detail: e.to_string(),
                })
            })?;
        let env = child_env(parent_env(), &self.cfg.extra_env, "");
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        let mut violations = check_config(&schema, &cfg, &names);
        violations.extend(env_contract_violations(&schema));
        if violations.is_empty() {
            return Ok(());
        }
        Err(BackendError::Config(format!(
            "the installed provider ({}) does not accept the generated config, nothing was applied: {}",
            self.cfg
                .resolved_provider_version()
                .map(|v| format!("pinned {v}"))
                .unwrap_or_else(|e| e.to_string()),
            join_violations(&violations)
        )))
    }

    /// `tofu output -json` as a map name → value. Empty when nothing is deployed.
    async fn outputs(&self, dir: &Path) -> Result<HashMap<String, Value>, BackendError> {
        let lines = self
            .tofu(
                dir,
                &["output", "-json"],
                self.cfg.short_timeout,
                &crate::compute::discard_output(),
            )
            .await?;
        let text = lines.join("\n");
        if text.trim().is_empty() {
            return Ok(HashMap::new());
        }
        let parsed: HashMap<String, OutputValue> =
            serde_json::from_str(&text).map_err(|e| BackendError::Protocol {
                op: "tofu output -json".into(),
                detail: e.to_string(),
            })?;
        Ok(parsed.into_iter().map(|(k, v)| (k, v.value)).collect())
    }

    fn vm_info_from(&self, d: &Desired, outs: &HashMap<String, Value>) -> Option<VmInfo> {
        let ip = outs.get("vm_ip")?.as_str()?.to_string();
        if ip.is_empty() {
            return None;
        }
        let mycelium = outs
            .get("mycelium_ip")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let node = outs
            .get("node_id")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.inputs.node_id);
        Some(VmInfo {
            name: d.inputs.name.clone(),
            backend: "opentofu".into(),
            ssh: SshTarget {
                // Reached over mycelium: the deployer host must run mycelium.
                host: mycelium.clone().unwrap_or_default(),
                port: 22,
                user: self.cfg.ssh_user.clone(),
            },
            private_ip: Some(ip.clone()),
            mycelium_ip: mycelium,
            web_backend_url: format!("http://{ip}:{}", self.cfg.web_port),
            manifest_path: self.cfg.manifest_path.clone(),
            work_dir: self.cfg.work_dir.clone(),
            env_file: None,
            node_id: Some(node),
            backend_id: Some(self.work_dir(&d.inputs.name).display().to_string()),
            secret_store: crate::compute::VmSecretStore::HeroProc,
        })
    }

    fn gateway_info_from(&self, d: &Desired, outs: &HashMap<String, Value>) -> Option<GatewayInfo> {
        let fqdn = outs.get("fqdn")?.as_str()?.to_string();
        if fqdn.is_empty() {
            return None;
        }
        let ip = outs
            .get("vm_ip")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Some(GatewayInfo {
            name: d.inputs.name.clone(),
            url: format!("https://{fqdn}/"),
            fqdn,
            backend_url: format!("http://{ip}:{}", self.cfg.web_port),
            connect_addr: None,
        })
    }

    /// Whether `terraform.tfstate` records a resource of type `ty`.
    fn state_holds(dir: &Path, ty: &str) -> Result<bool, BackendError> {
        Ok(Self::state_resources(dir)?.iter().any(|(t, _)| t == ty))
    }

    /// The resource types `terraform.tfstate` records, for inventory: an unreadable state lists none there
    /// (its working dir is still listed).
    fn state_resource_types(dir: &Path) -> Vec<String> {
        Self::state_resources(dir)
            .unwrap_or_default()
            .into_iter()
            .map(|(ty, _)| ty)
            .collect()
    }

    /// The resources `terraform.tfstate` records, as `(type, name)`, read without a child process; none without a
    /// state file. A state that cannot be read or parsed is an error, not "none": the caller is deciding whether
    /// something still runs on the grid.
    fn state_resources(dir: &Path) -> Result<Vec<(String, String)>, BackendError> {
        let path = dir.join("terraform.tfstate");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackendError::io(&path)(e)),
        };
        let unreadable = |detail: String| BackendError::Protocol {
            op: "read terraform.tfstate".into(),
            detail: format!("{}: {detail}", path.display()),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        let Some(rs) = v.get("resources") else {
            return Ok(Vec::new());
        };
        let rs = rs
            .as_array()
            .ok_or_else(|| unreadable("`resources` is not a list".into()))?;
        rs.iter()
            .map(|r| {
                let field = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
                match (field("type"), field("name")) {
                    (Some(ty), Some(name)) => Ok((ty, name)),
                    _ => Err(unreadable("a resource without a `type` and `name`".into())),
                }
            })
            .collect()
    }
}

#[async_trait]
impl ComputeBackend for OpenTofuBackend {
    fn kind(&self) -> &'static str {
        "opentofu"
    }

    /// A deploy is `init`, the schema read, `apply` and `output`, each with its own timeout.
    fn longest_call(&self) -> Option<Duration> {
        Some(self.cfg.longest_call())
    }

    fn check_prerequisites(&self) -> Result<(), BackendError> {
        self.cfg.check_prerequisites()
    }

    async fn deploy_vm(&self, req: &VmRequest, out: OutputSink) -> Result<VmInfo, BackendError> {
        let name = &req.name;
        let lock = self.lock_for(&name.to_string());
        let _g = lock.lock().await;
        let dir = self.work_dir(name);
        let existing = self.read_desired(&dir)?;
        if let Some(d) = &existing {
            if dir.join("terraform.tfstate").exists() {
                let outs = self.outputs(&dir).await?;
                if let Some(info) = self.vm_info_from(d, &outs) {
                    out(&format!(
                        "{name}: VM already deployed on node {}: adopting it",
                        d.inputs.node_id
                    ));
                    return Ok(info);
                }
            }
        }
        let node_id = req.node_id.ok_or_else(|| {
            BackendError::Config("the opentofu backend needs a node id (run node selection)".into())
        })?;
        self.cfg.check_prerequisites()?;
        let version = self.cfg.resolved_provider_version()?;
        // Keep random values across attempts; keep a gateway that is already configured.
        let (key, seed, gateway_label) = match &existing {
            Some(d) => (
                d.inputs.mycelium_key_hex.clone(),
                d.inputs.mycelium_ip_seed_hex.clone(),
                // A label from an older naming scheme (`jan_de_vries`) is dropped here;
                // deploy_gateway puts a valid one back.
                d.inputs
                    .gateway_label
                    .clone()
                    .filter(|l| gateway_labels(name).contains(l)),
            ),
            None => (self.random_hex(32), self.random_hex(6), None),
        };
        let desired = Desired {
            inputs: TfInputs {
                name: name.clone(),
                network: self.cfg.network,
                node_id,
                spec: req.spec.clone(),
                ssh_public_key: req.ssh_public_key.trim().to_string(),
                mycelium_key_hex: key,
                mycelium_ip_seed_hex: seed,
                ip_range: self.cfg.ip_range.clone(),
                web_port: self.cfg.web_port,
                gateway_label,
                provider_version: Some(version.to_string()),
            },
        };
        self.write_config(&dir, &desired)?;
        self.init_and_apply(&dir, &out).await?;
        let outs = self.outputs(&dir).await?;
        self.vm_info_from(&desired, &outs)
            .ok_or_else(|| BackendError::Protocol {
                op: "deploy_vm".into(),
                detail: "apply succeeded but `tofu output -json` has no vm_ip".into(),
            })
    }

    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError> {
        let dir = self.work_dir(name);
        let Some(d) = self.read_desired(&dir)? else {
            return Ok(None);
        };
        if !dir.join("terraform.tfstate").exists() {
            return Ok(None);
        }
        let outs = self.outputs(&dir).await?;
        Ok(self.vm_info_from(&d, &outs))
    }

    /// Everything the working dir's state holds. `get_vm` answers `None` for a state holding only the network (an
    /// apply that failed after creating it), and `get_gateway` looks only for the name proxy; the network's
    /// contract runs on all the same, and only `delete_vm`'s destroy removes it.
    async fn remains(&self, name: &ResourceName) -> Result<Vec<String>, BackendError> {
        let dir = self.work_dir(name);
        Ok(Self::state_resources(&dir)?
            .into_iter()
            .map(|(ty, res)| format!("{ty}.{res} in the opentofu state"))
            .collect())
    }

    async fn delete_vm(&self, name: &ResourceName, out: OutputSink) -> Result<(), BackendError> {
        let lock = self.lock_for(&name.to_string());
        let _g = lock.lock().await;
        let dir = self.work_dir(name);
        if !dir.exists() {
            return Ok(());
        }
        if dir.join("main.tf.json").exists() {
            // Re-render with the pinned provider: a dir written before the pin would otherwise
            // destroy with whatever provider `init` resolves today.
            if let Some(mut d) = self.read_desired(&dir)? {
                d.inputs.provider_version = Some(self.cfg.resolved_provider_version()?.to_string());
                self.write_config_checked(&dir, &d, false)?;
            }
            self.tofu(&dir, INIT_ARGS, self.cfg.short_timeout, &out)
                .await?;
            self.tofu(
                &dir,
                &["destroy", "-auto-approve", "-input=false"],
                self.cfg.apply_timeout,
                &out,
            )
            .await?;
        }
        // Only after a successful destroy: the state is no longer needed.
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(BackendError::io(&dir))?;
        out(&format!("{name}: destroyed; working dir removed"));
        Ok(())
    }

    async fn deploy_gateway(
        &self,
        req: &GatewayRequest,
        out: OutputSink,
    ) -> Result<GatewayInfo, BackendError> {
        let name = &req.name;
        let lock = self.lock_for(&name.to_string());
        let _g = lock.lock().await;
        let dir = self.work_dir(name);
        let Some(mut d) = self.read_desired(&dir)? else {
            return Err(BackendError::Rejected {
                op: "deploy_gateway".into(),
                detail: format!("{name} has no VM working dir: deploy the VM first"),
            });
        };
        if let Some(node) = req.node_id {
            if node != d.inputs.node_id {
                return Err(BackendError::Rejected {
                    op: "deploy_gateway".into(),
                    detail: format!(
                        "gateway node {node} differs from the VM's node {}: the gateway must be in the VM's network",
                        d.inputs.node_id
                    ),
                });
            }
        }
        // The labels come from `grid_names` (one place); a label an earlier attempt chose is
        // tried first (it may be registered to us already), then the rest in order.
        let candidates = gateway_labels(name);
        if req.host_label != name.grid_name() && !candidates.contains(&req.host_label) {
            let why = gateway_label_problem(&req.host_label)
                .unwrap_or_else(|| "it is not one of this user's labels".into());
            out(&format!(
                "{name}: requested host label {:?} not used ({why}); the grid labels are {}",
                req.host_label,
                candidates.join(", ")
            ));
        }
        let mut order: Vec<String> = Vec::new();
        if let Some(l) = d
            .inputs
            .gateway_label
            .clone()
            .filter(|l| candidates.contains(l))
        {
            let outs = self.outputs(&dir).await?;
            if let Some(info) = self.gateway_info_from(&d, &outs) {
                out(&format!(
                    "{name}: gateway {} already deployed: adopting it",
                    info.fqdn
                ));
                return Ok(info);
            }
            order.push(l);
        }
        for c in &candidates {
            if !order.contains(c) {
                order.push(c.clone());
            }
        }
        if order.is_empty() {
            return Err(BackendError::InvalidName(format!(
                "{name}: no gateway label passes the grid's rules"
            )));
        }
        d.inputs.provider_version = Some(self.cfg.resolved_provider_version()?.to_string());
        let mut taken = Vec::new();
        for label in order {
            d.inputs.gateway_label = Some(label.clone());
            self.write_config(&dir, &d)?;
            match self.init_and_apply(&dir, &out).await {
                Ok(()) => {}
                Err(BackendError::NameTaken { .. }) => {
                    out(&format!(
                        "{name}: gateway name {label:?} is taken on the {} network (TFChain {CHAIN_NAME_EXISTS}); trying the next label",
                        self.cfg.network
                    ));
                    taken.push(label);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let outs = self.outputs(&dir).await?;
            return self
                .gateway_info_from(&d, &outs)
                .ok_or_else(|| BackendError::Protocol {
                    op: "deploy_gateway".into(),
                    detail: "apply succeeded but `tofu output -json` has no fqdn".into(),
                });
        }
        Err(BackendError::NameTaken {
            label: taken.join(", "),
            by: format!(
                " on the {} network: TFChain answered {CHAIN_NAME_EXISTS} for every label this user can have; \
                 free one of them (a leftover name contract of this twin?) or rename the user",
                self.cfg.network
            ),
        })
    }

    /// Whether a gateway exists is what the state holds, not what `desired.json` asks for: a delete whose apply
    /// failed has already taken the label out of `desired.json` while the name contract is still in the state
    /// (and on the chain). Answered `None` then, the gateway was forgotten while it ran on.
    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError> {
        let dir = self.work_dir(name);
        let Some(d) = self.read_desired(&dir)? else {
            return Ok(None);
        };
        if !Self::state_holds(&dir, "grid_name_proxy")? {
            return Ok(None);
        }
        let outs = self.outputs(&dir).await?;
        self.gateway_info_from(&d, &outs)
            .map(Some)
            .ok_or_else(|| BackendError::Protocol {
                op: "get_gateway".into(),
                detail: "the state holds a name proxy but `tofu output -json` has no fqdn (an unfinished \
                         gateway delete?); delete the gateway again"
                    .into(),
            })
    }

    async fn delete_gateway(
        &self,
        name: &ResourceName,
        out: OutputSink,
    ) -> Result<(), BackendError> {
        let lock = self.lock_for(&name.to_string());
        let _g = lock.lock().await;
        let dir = self.work_dir(name);
        let Some(mut d) = self.read_desired(&dir)? else {
            return Ok(());
        };
        // Nothing to do only when neither asks for a gateway nor the state holds one: a previous delete whose
        // apply failed left `desired.json` without the label and the name proxy in the state (see `get_gateway`).
        if d.inputs.gateway_label.is_none() && !Self::state_holds(&dir, "grid_name_proxy")? {
            return Ok(());
        }
        d.inputs.gateway_label = None;
        self.write_config(&dir, &d)?;
        self.init_and_apply(&dir, &out).await?;
        out(&format!("{name}: gateway removed"));
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<Resource>, BackendError> {
        let mut res = Vec::new();
        let rd = match std::fs::read_dir(&self.cfg.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(res),
            Err(e) => return Err(BackendError::io(&self.cfg.root)(e)),
        };
        let mut dirs: Vec<_> = rd.flatten().filter(|e| e.path().is_dir()).collect();
        dirs.sort_by_key(|e| e.file_name());
        for e in dirs {
            let raw = e.file_name().to_string_lossy().to_string();
            let name = ResourceName::parse(&raw);
            let types = Self::state_resource_types(&e.path());
            let node = self
                .read_desired(&e.path())
                .ok()
                .flatten()
                .map(|d| d.inputs.node_id);
            let node_txt = node
                .map(|n| format!("node {n}"))
                .unwrap_or_else(|| "no config".into());
            res.push(Resource {
                kind: ResourceKind::Vm,
                raw_name: raw.clone(),
                name: name.clone(),
                detail: if types.iter().any(|t| t == "grid_deployment") {
                    format!("deployed, {node_txt}")
                } else {
                    format!("working dir without a deployment in state, {node_txt}")
                },
            });
            if types.iter().any(|t| t == "grid_name_proxy") {
                res.push(Resource {
                    kind: ResourceKind::Gateway,
                    raw_name: raw,
                    name,
                    detail: format!("name proxy, {node_txt}"),
                });
            }
        }
        Ok(res)
    }
}

/// How much `tofu` may print on stdout, which is kept whole for parsing (`providers schema -json` is one line of
/// a few MiB). Past it the run fails rather than grow the deployer's memory.
const MAX_STDOUT: usize = 64 << 20;

/// The longest stderr line read. Lines are shown cut at `lines::MAX_LINE`, but only after the mnemonic is
/// redacted from them, so the read bound is well above the shown one: a cut in the middle of the mnemonic would
/// otherwise show its first words.
const MAX_STDERR_LINE: usize = 64 * 1024;

/// How long an interrupted `tofu` may take to stop its provider and write its state before it is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(300);

/// What a reader of one of `tofu`'s pipes hands the run.
enum Piped {
    Line {
        stderr: bool,
        text: String,
    },
    /// Stdout went past [`MAX_STDOUT`].
    TooMuch,
}

/// Reads one of `tofu`'s pipes to its end as lines: stdout's whole up to [`MAX_STDOUT`] in total, stderr's cut
/// at [`MAX_STDERR_LINE`].
async fn read_lines(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    stderr: bool,
    tx: tokio::sync::mpsc::UnboundedSender<Piped>,
) {
    let mut split = if stderr {
        crate::lines::LineSplitter::new(MAX_STDERR_LINE)
    } else {
        crate::lines::LineSplitter::new(MAX_STDOUT)
    };
    let mut chunk = vec![0u8; 16 * 1024];
    let mut total = 0usize;
    let mut send = |text| {
        let _ = tx.send(Piped::Line { stderr, text });
    };
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                if !stderr && total > MAX_STDOUT {
                    let _ = tx.send(Piped::TooMuch);
                    return;
                }
                split.push(&chunk[..n], &mut send);
            }
        }
    }
    split.finish(&mut send);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_helpers() {
        assert_eq!(
            strip_ansi("\u{1b}[1m\u{1b}[32mApply complete!\u{1b}[0m"),
            "Apply complete!"
        );
        // OSC (title, hyperlink) sequences, other controls, C1 and bidi overrides are not shown; a tab is a space.
        for (raw, shown) in [
            ("\u{1b}]0;owned title\u{7}Error: x", "Error: x"),
            (
                "\u{1b}]8;;https://evil.example\u{1b}\\link\u{1b}]8;;\u{1b}\\",
                "link",
            ),
            ("node\u{202e}txt.exe 8\u{200b} down", "nodetxt.exe 8 down"),
            ("a\u{7}b\u{85}c\rd", "abcd"),
            ("\u{2502}\tError:\tx", "\u{2502} Error: x"),
        ] {
            assert_eq!(strip_ansi(raw), shown, "{raw:?}");
        }
        assert!(looks_transient(
            &["Error: context deadline exceeded".into()]
        ));
        assert!(!looks_transient(&["Error: invalid flist".into()]));
        // TFChain's own error as the provider frames it; nothing else counts.
        let framed = |l: &str| vec![l.to_string()];
        assert!(chain_name_exists(&framed(
            "│ Error: couldn't deploy name gateway with error: failed to create contract: NameExists"
        )));
        assert!(chain_name_exists(&framed(
            "│ Error: couldn't deploy name gateway with error: NameExists"
        )));
        assert!(chain_name_exists(&framed(
            "Error: couldn't update name gateway with error: NameExists "
        )));
        for other in [
            "Error: name already registered",
            "│ Error: couldn't deploy name gateway with error: NameNotValid",
            "│ Error: couldn't deploy deployment with error: NameExists",
            "│ Error: couldn't deploy name gateway with error: NameExists because x",
            "│ Error: couldn't deploy name gateway with error: failed to create contract: NameNotValid",
            "│ Error: couldn't deploy name gateway with error: failed: NameExistsX",
            "NameExists",
        ] {
            assert!(!chain_name_exists(&framed(other)), "{other}");
        }
    }
}
