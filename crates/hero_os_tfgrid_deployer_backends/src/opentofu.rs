//! The `opentofu` backend: one working directory per user with a generated `main.tf.json` for the
//! `threefoldtech/grid` provider, driven by the `tofu` CLI as a child process.
//!
//! * Config generation is a pure function ([`render_main_tf_json`]) checked by golden files and by
//!   a test against the provider schema facts (`^[a-zA-Z0-9_]+$` names, MB/GB units, required
//!   attributes).
//! * The mnemonic is given to the child only, as env `MNEMONIC` (the provider's variable): it is
//!   never written to `main.tf.json`, never on a command line, and redacted from streamed output.
//! * The provider's `network` is always set: it silently falls back to `dev` otherwise.
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
use tokio::io::{AsyncBufReadExt, BufReader};
use zeroize::Zeroizing;

use crate::compute::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Resource, ResourceKind,
    ResourceName, VmInfo, VmRequest,
};
use crate::gridproxy::Network;
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
    /// Resource name: deployment and VM name; the network is `<name>_net`.
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
    /// Name-proxy label (the user's grid name), if a gateway is wanted.
    pub gateway_label: Option<String>,
    /// Provider version constraint, if pinned.
    pub provider_version: Option<String>,
}

impl TfInputs {
    /// The `grid_network` name.
    pub fn network_name(&self) -> String {
        format!("{}_net", self.name)
    }
}

/// Render `main.tf.json` (Terraform JSON syntax). Pure: same inputs, same bytes.
pub fn render_main_tf_json(i: &TfInputs) -> Value {
    let name = i.name.to_string();
    let net = i.network_name();
    let node_key = i.node_id.to_string();
    let mut provider_req = json!({ "source": "threefoldtech/grid" });
    if let Some(v) = &i.provider_version {
        provider_req["version"] = json!(v);
    }
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
                "disks": [{ "name": "data", "size": i.spec.disk_gb }],
                "vms": [{
                    "name": name,
                    "flist": i.spec.flist,
                    "entrypoint": i.spec.entrypoint,
                    "cpu": i.spec.cpu,
                    "memory": i.spec.memory_mb,
                    "rootfs_size": i.spec.rootfs_mb,
                    "mounts": [{ "name": "data", "mount_point": "/data" }],
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
    pub extra_env: Vec<(String, String)>,
    /// Provider version constraint (e.g. `1.11.1`); `None` = whatever `init` resolves.
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
            short_timeout: Duration::from_secs(10 * 60),
            apply_timeout: Duration::from_secs(50 * 60),
        }
    }
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

/// Lines that say the gateway name contract is taken.
fn looks_name_taken(lines: &[String]) -> bool {
    lines.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("name") && (l.contains("already") || l.contains("taken") || l.contains("exists"))
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
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

    /// Persist `desired.json` and `main.tf.json` (atomically, desired first).
    fn write_config(&self, dir: &Path, d: &Desired) -> Result<(), BackendError> {
        std::fs::create_dir_all(dir).map_err(BackendError::io(dir))?;
        let write = |file: &str, v: String| -> Result<(), BackendError> {
            let p = dir.join(file);
            let tmp = dir.join(format!("{file}.tmp"));
            std::fs::write(&tmp, v).map_err(BackendError::io(&tmp))?;
            std::fs::rename(&tmp, &p).map_err(BackendError::io(&p))
        };
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
    /// lines (ANSI stripped, mnemonic redacted) to `out`; return stdout lines.
    async fn tofu(
        &self,
        dir: &Path,
        args: &[&str],
        timeout: Duration,
        out: &OutputSink,
    ) -> Result<Vec<String>, BackendError> {
        let shown = format!("tofu {}", args.join(" "));
        let mut cmd = tokio::process::Command::new(&self.cfg.tofu_bin);
        cmd.args(args)
            .current_dir(dir)
            .envs(
                self.cfg
                    .extra_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .env("MNEMONIC", self.cfg.mnemonic.as_str())
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            BackendError::Config(format!("cannot run {}: {e}", self.cfg.tofu_bin.display()))
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(BackendError::Config("tofu child has no pipes".into()));
        };
        let mnemonic = self.cfg.mnemonic.clone();
        let clean = move |l: &str| -> String {
            let l = strip_ansi(l);
            if !mnemonic.is_empty() && l.contains(mnemonic.as_str()) {
                l.replace(mnemonic.as_str(), "<redacted>")
            } else {
                l
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, String)>();
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send((false, l)).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx2.send((true, l)).is_err() {
                    break;
                }
            }
        });
        let mut stdout_lines = Vec::new();
        let mut tail: Vec<String> = Vec::new();
        let run = async {
            while let Some((is_err, l)) = rx.recv().await {
                let l = clean(&l);
                out(&l);
                tail.push(l.clone());
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
                    detail: format!("no result within {timeout:?} (child killed)"),
                })
            }
        };
        if !status.success() {
            let transient = looks_transient(&tail);
            if args.first() == Some(&"apply") && looks_name_taken(&tail) && !transient {
                return Err(BackendError::NameTaken {
                    label: String::new(),
                    by: format!(" (tofu: {})", tail.last().cloned().unwrap_or_default()),
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

    async fn init_and_apply(&self, dir: &Path, out: &OutputSink) -> Result<(), BackendError> {
        self.tofu(dir, &["init", "-input=false"], self.cfg.short_timeout, out)
            .await?;
        self.tofu(
            dir,
            &["apply", "-auto-approve", "-input=false"],
            self.cfg.apply_timeout,
            out,
        )
        .await?;
        Ok(())
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

    /// Parse the resource types recorded in `terraform.tfstate` (no child process: for inventory).
    fn state_resource_types(dir: &Path) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(dir.join("terraform.tfstate")) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Vec::new();
        };
        v.get("resources")
            .and_then(Value::as_array)
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| r.get("type").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[async_trait]
impl ComputeBackend for OpenTofuBackend {
    fn kind(&self) -> &'static str {
        "opentofu"
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
        // Keep random values across attempts; keep a gateway that is already configured.
        let (key, seed, gateway_label) = match &existing {
            Some(d) => (
                d.inputs.mycelium_key_hex.clone(),
                d.inputs.mycelium_ip_seed_hex.clone(),
                d.inputs.gateway_label.clone(),
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
                provider_version: self.cfg.provider_version.clone(),
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

    async fn delete_vm(&self, name: &ResourceName, out: OutputSink) -> Result<(), BackendError> {
        let lock = self.lock_for(&name.to_string());
        let _g = lock.lock().await;
        let dir = self.work_dir(name);
        if !dir.exists() {
            return Ok(());
        }
        if dir.join("main.tf.json").exists() {
            self.tofu(
                &dir,
                &["init", "-input=false"],
                self.cfg.short_timeout,
                &out,
            )
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
        if !req
            .host_label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || req.host_label.is_empty()
        {
            return Err(BackendError::InvalidName(format!(
                "gateway name {:?} must match ^[a-zA-Z0-9_]+$",
                req.host_label
            )));
        }
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
        if d.inputs.gateway_label.as_deref() == Some(req.host_label.as_str()) {
            let outs = self.outputs(&dir).await?;
            if let Some(info) = self.gateway_info_from(&d, &outs) {
                out(&format!(
                    "{name}: gateway {} already deployed: adopting it",
                    info.fqdn
                ));
                return Ok(info);
            }
        }
        d.inputs.gateway_label = Some(req.host_label.clone());
        self.write_config(&dir, &d)?;
        self.init_and_apply(&dir, &out).await.map_err(|e| match e {
            BackendError::NameTaken { by, .. } => BackendError::NameTaken {
                label: req.host_label.clone(),
                by,
            },
            e => e,
        })?;
        let outs = self.outputs(&dir).await?;
        self.gateway_info_from(&d, &outs)
            .ok_or_else(|| BackendError::Protocol {
                op: "deploy_gateway".into(),
                detail: "apply succeeded but `tofu output -json` has no fqdn".into(),
            })
    }

    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError> {
        let dir = self.work_dir(name);
        let Some(d) = self.read_desired(&dir)? else {
            return Ok(None);
        };
        if d.inputs.gateway_label.is_none() || !dir.join("terraform.tfstate").exists() {
            return Ok(None);
        }
        let outs = self.outputs(&dir).await?;
        Ok(self.gateway_info_from(&d, &outs))
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
        if d.inputs.gateway_label.is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_helpers() {
        assert_eq!(
            strip_ansi("\u{1b}[1m\u{1b}[32mApply complete!\u{1b}[0m"),
            "Apply complete!"
        );
        assert!(looks_transient(
            &["Error: context deadline exceeded".into()]
        ));
        assert!(!looks_transient(&["Error: invalid flist".into()]));
        assert!(looks_name_taken(&["Error: name already registered".into()]));
    }
}
