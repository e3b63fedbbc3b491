//! The `local` backend: each "VM" is a sandbox on this machine, and the web gateway is a real
//! reverse proxy on one loopback port. The embedded default, for the quickstart, development and
//! tests: everything after deploy (SSH wait, upload, bootstrap, health through the gateway URL) is
//! real.
//!
//! A sandbox is a directory `<root>/sandboxes/<name>/` holding:
//! * `sandbox.json` — its record (ports, public key);
//! * `sshd/` — a real OpenSSH `sshd` config on `127.0.0.1:<ssh port>` whose only authorized key is
//!   the user's, started detached with a pid file so it survives a restart of the deployer, and
//!   restarted on its port when it dies while the sandbox exists (`local_sshd_watch.rs`);
//! * `env` — sourced before commands run over SSH: exports `HERO_WEB_PORT` (the sandbox's stand-in
//!   for the VM's port 9988), `HERO_PIDS_DIR`, `HERO_SANDBOX`, `HERO_HOME`, `HERO_SECRETS_DIR` (the
//!   sandbox's secret store, its stand-in for hero_proc) and `HERO_BIN_DIR` (where the stand-ins of
//!   the Hero stack are: this workspace's `hero_proxy` and `hero_cockpit_standin`);
//! * `secrets/` — the encrypted store the deployer fills over SSH (`configure_sso`) and the
//!   sandbox's hero_proxy and cockpit read;
//! * `pids/*.pid` — every process the bootstrap starts records its PID there;
//! * `home/hero/cfg/cockpit/services.toml` — where the manifest goes (the VM's `~driver/hero/…`).
//!
//! `delete_vm` kills every process of the sandbox by PID (pid files, plus any process whose command
//! line names the sandbox directory) and removes the directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::compute::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Resource, ResourceKind,
    ResourceName, VmInfo, VmRequest,
};
use crate::local_gateway::{self, GatewayState, GatewayTask, Route};
use crate::process::{
    free_loopback_port, kill_pid, pid_cmdline, pid_is_ours, read_pid_file, shell_quote,
};
use crate::ssh::SshTarget;
use crate::sshd::{self, SshdFiles, DEFAULT_SSHD};

/// The default bootstrap script for sandboxes: starts a tiny HTTP server answering `GET /health`
/// on the sandbox's web port and records its PID. A stand-in for the real `setup-binaries.sh`.
pub const DEFAULT_BOOTSTRAP_SCRIPT: &str = include_str!("../assets/local-setup-binaries.sh");

/// Configuration of the local backend.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Root directory: `sandboxes/` and `gateway/routes.json` live here.
    pub root: PathBuf,
    /// Where the gateway listens (loopback; port 0 = any free port, for tests). Default
    /// `127.0.0.1:8088`.
    pub gateway_listen: SocketAddr,
    /// sshd binary (absolute: sshd re-execs itself). Default `/usr/sbin/sshd`.
    pub sshd_bin: PathBuf,
    /// SSH user; default the current user (an sshd run by an ordinary user only lets that user in).
    pub ssh_user: Option<String>,
    /// How long to wait for a sandbox sshd to come up.
    pub sshd_start_timeout: Duration,
    /// Where the sandbox's Hero stack stand-ins live (`hero_proxy`, `hero_cockpit_standin`: this
    /// workspace's binaries), exported to the sandbox as `HERO_BIN_DIR`. Default: the directory of
    /// the running executable (see [`default_bin_dir`]).
    pub bin_dir: PathBuf,
}

/// The directory of the running executable, or its parent when that is cargo's `deps/` (a test
/// binary), where the workspace's binaries are.
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(parent) = dir.parent() {
            return parent.to_path_buf();
        }
    }
    dir
}

impl LocalConfig {
    /// Defaults with `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            gateway_listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            sshd_bin: PathBuf::from(DEFAULT_SSHD),
            ssh_user: None,
            sshd_start_timeout: Duration::from_secs(10),
            bin_dir: default_bin_dir(),
        }
    }
}

/// Runtime fault injection for tests of the orchestrator (feature `test-hooks` only).
/// Counters are "the next N calls"; each faulted call consumes one.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Default)]
pub struct LocalFaults {
    /// The next N `deploy_vm` calls fail with [`BackendError::Timeout`] (nothing is created).
    pub deploy_vm_timeouts: std::sync::atomic::AtomicU32,
    /// The next N `deploy_vm` calls fail with [`BackendError::Unavailable`] ("HTTP 503").
    pub deploy_vm_unavailable: std::sync::atomic::AtomicU32,
    /// The next N `deploy_gateway` calls fail with [`BackendError::Timeout`].
    pub deploy_gateway_timeouts: std::sync::atomic::AtomicU32,
    /// The next N `deploy_gateway` calls fail with [`BackendError::Unavailable`].
    pub deploy_gateway_unavailable: std::sync::atomic::AtomicU32,
    /// While true, the gateway answers 503 to `GET /health` for every route.
    pub health_503: std::sync::atomic::AtomicBool,
    /// Latency added to every mutating call (deploy/delete), in milliseconds: the benchmark's L.
    pub op_latency_ms: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "test-hooks")]
impl LocalFaults {
    /// Consume one unit of `counter`; true if the fault fires.
    pub fn take(counter: &std::sync::atomic::AtomicU32) -> bool {
        use std::sync::atomic::Ordering;
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// What `sandbox.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SandboxRecord {
    name: String,
    ssh_port: u16,
    web_port: u16,
    public_key: String,
}

/// The local backend. Cheap to share behind an `Arc`; dropping it stops the gateway (sandboxes
/// keep running: they are meant to survive the deployer).
pub struct LocalBackend {
    cfg: LocalConfig,
    ssh_user: String,
    gateway_addr: SocketAddr,
    gateway: Arc<GatewayState>,
    _gateway_task: GatewayTask,
    /// Per-resource locks so concurrent steps for one name serialize, different names do not.
    locks: crate::local_sshd_watch::NameLocks,
    /// Restarts a sandbox sshd that died (see `local_sshd_watch`).
    sshd_watch: crate::local_sshd_watch::SshdWatch,
    routes_lock: tokio::sync::Mutex<()>,
    /// Held from picking a sandbox port until the record naming it is written ([`LocalBackend::fresh_ports`]).
    ports_lock: std::sync::Mutex<()>,
    #[cfg(feature = "test-hooks")]
    faults: Arc<LocalFaults>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("root", &self.cfg.root)
            .field("gateway_addr", &self.gateway_addr)
            .finish()
    }
}

fn current_user() -> Result<String, BackendError> {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .map_err(|e| BackendError::Config(format!("cannot look up the current user: {e}")))?
        .map(|u| u.name)
        .ok_or_else(|| BackendError::Config("the current uid has no user name".into()))
}

/// Starts the gateway on `cfg.gateway_listen`. Port 0 means "any free port" (tests, side by side),
/// but a VM's public URL must not move when the server restarts: its OAuth app's callback and its
/// edge's `public_url` were made for that URL by earlier steps, which a resumed job does not run
/// again. So the port first chosen is kept in `gateway/listen` and asked for again on the next
/// start; only when another process holds it now does the gateway move (logged). A configured
/// port never moves.
async fn bind_gateway(
    cfg: &LocalConfig,
    gateway: Arc<GatewayState>,
) -> Result<(SocketAddr, local_gateway::GatewayTask), BackendError> {
    if cfg.gateway_listen.port() != 0 {
        return local_gateway::serve(cfg.gateway_listen, gateway).await;
    }
    let kept = cfg.root.join("gateway").join("listen");
    let previous: Option<SocketAddr> = std::fs::read_to_string(&kept)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|a: &SocketAddr| a.ip() == cfg.gateway_listen.ip());
    let mut served = None;
    if let Some(addr) = previous {
        // A gateway that just stopped (the previous process still exiting, or a restart within
        // one process) may hold the port for a moment: ask again, for half a second at most.
        for attempt in 0..10 {
            match local_gateway::serve(addr, gateway.clone()).await {
                Ok(s) => {
                    served = Some(s);
                    break;
                }
                Err(e) if attempt == 9 => tracing::warn!(%addr, error = %e,
                    "the local gateway's previous port is taken; it moves, and the URLs of existing sandboxes with it"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    let served = match served {
        Some(s) => s,
        None => local_gateway::serve(cfg.gateway_listen, gateway).await?,
    };
    let dir = cfg.root.join("gateway");
    std::fs::create_dir_all(&dir).map_err(BackendError::io(&dir))?;
    crate::compute::replace_file(&kept, served.0.to_string().as_bytes())?;
    Ok(served)
}

impl LocalBackend {
    /// Create the root, load the persisted gateway routes and start the gateway.
    pub async fn start(cfg: LocalConfig) -> Result<Self, BackendError> {
        tokio::fs::create_dir_all(cfg.root.join("sandboxes"))
            .await
            .map_err(BackendError::io(&cfg.root))?;
        let ssh_user = match &cfg.ssh_user {
            Some(u) => u.clone(),
            None => current_user()?,
        };
        #[cfg(feature = "test-hooks")]
        let faults = Arc::new(LocalFaults::default());
        #[cfg(feature = "test-hooks")]
        let health_503: Box<dyn Fn() -> bool + Send + Sync> = {
            let f = faults.clone();
            Box::new(move || f.health_503.load(std::sync::atomic::Ordering::SeqCst))
        };
        #[cfg(not(feature = "test-hooks"))]
        let health_503: Box<dyn Fn() -> bool + Send + Sync> = Box::new(|| false);
        let gateway = Arc::new(GatewayState::new(
            cfg.root.join("gateway").join("routes.json"),
            health_503,
        )?);
        let (gateway_addr, task) = bind_gateway(&cfg, gateway.clone()).await?;
        let locks: crate::local_sshd_watch::NameLocks = Arc::new(Mutex::new(HashMap::new()));
        let sshd_watch = crate::local_sshd_watch::SshdWatch::new(
            cfg.sshd_bin.clone(),
            cfg.sshd_start_timeout,
            locks.clone(),
        );
        Ok(Self {
            cfg,
            ssh_user,
            gateway_addr,
            gateway,
            _gateway_task: task,
            locks,
            sshd_watch,
            routes_lock: tokio::sync::Mutex::new(()),
            ports_lock: std::sync::Mutex::new(()),
            #[cfg(feature = "test-hooks")]
            faults,
        })
    }

    /// Where the gateway listens (resolved port when configured with port 0).
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// The fault switches (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn faults(&self) -> Arc<LocalFaults> {
        self.faults.clone()
    }

    /// Kill the sandbox's sshd (so SSH is refused until `get_vm`/`deploy_vm` restarts it).
    /// Feature `test-hooks`.
    #[cfg(feature = "test-hooks")]
    pub async fn stop_sshd(&self, name: &ResourceName) -> bool {
        self.sshd_watch.hold_down(&name.to_string());
        match self.sshd_files(name).live_pid() {
            Some(pid) => kill_pid(pid, Duration::from_secs(2)).await,
            None => true,
        }
    }

    /// The sandbox directory of `name`.
    pub fn sandbox_dir(&self, name: &ResourceName) -> PathBuf {
        self.cfg.root.join("sandboxes").join(name.to_string())
    }

    fn sshd_files(&self, name: &ResourceName) -> SshdFiles {
        SshdFiles::new(self.sandbox_dir(name).join("sshd"))
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(p) => p.into_inner().entry(name.to_string()).or_default().clone(),
        }
    }

    async fn injected_latency(&self) {
        #[cfg(feature = "test-hooks")]
        {
            let ms = self
                .faults
                .op_latency_ms
                .load(std::sync::atomic::Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    /// `N` distinct loopback ports free now and held by no sandbox's record, nor in `also_taken`
    /// (the records are read once). Call it with `ports_lock` held, and keep the ports until the
    /// record naming them is written. Why: a port that is free now may be a sandbox's whose
    /// hero_proxy is down or not yet started (its web port stays unbound until the bootstrap runs),
    /// and two deploys picking at once both see it free; the second user's route then pointed at the
    /// first user's proxy, and its health check passed.
    fn fresh_ports<const N: usize>(&self, also_taken: &[u16]) -> Result<[u16; N], BackendError> {
        let sandboxes = self.cfg.root.join("sandboxes");
        let mut taken: Vec<u16> = also_taken.to_vec();
        if let Ok(rd) = std::fs::read_dir(&sandboxes) {
            for e in rd.flatten() {
                let Ok(text) = std::fs::read_to_string(e.path().join("sandbox.json")) else {
                    continue;
                };
                if let Ok(rec) = serde_json::from_str::<SandboxRecord>(&text) {
                    taken.extend([rec.ssh_port, rec.web_port]);
                }
            }
        }
        let mut picked = [0u16; N];
        for slot in picked.iter_mut() {
            *slot = (0..64)
                .map(|_| free_loopback_port().map_err(BackendError::io(&sandboxes)))
                .find(|p| p.as_ref().map_or(true, |p| !taken.contains(p)))
                .unwrap_or_else(|| {
                    Err(BackendError::Config(
                        "no loopback port free of every sandbox's record after 64 tries".into(),
                    ))
                })?;
            taken.push(*slot);
        }
        Ok(picked)
    }

    /// The sandbox's record; `None` when it has none. An unreadable record is an error, never "none":
    /// a deploy takes a sandbox without a record for an interrupted attempt and removes it, with the
    /// user's home and secrets in it.
    fn read_record(&self, name: &ResourceName) -> Result<Option<SandboxRecord>, BackendError> {
        let path = self.sandbox_dir(name).join("sandbox.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BackendError::io(&path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| BackendError::Protocol {
                op: format!("read {}", path.display()),
                detail: format!("{e}; the sandbox is left as it is: fix or move the record aside"),
            })
    }

    fn write_record(&self, name: &ResourceName, rec: &SandboxRecord) -> Result<(), BackendError> {
        let dir = self.sandbox_dir(name);
        let text = serde_json::to_string_pretty(rec).map_err(|e| BackendError::Protocol {
            op: "write sandbox record".into(),
            detail: e.to_string(),
        })?;
        crate::compute::replace_file(&dir.join("sandbox.json"), text.as_bytes())
    }

    fn write_env(&self, name: &ResourceName, rec: &SandboxRecord) -> Result<(), BackendError> {
        let dir = self.sandbox_dir(name);
        let d = dir.to_string_lossy();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let env = format!(
            "# Sandbox environment, sourced before commands run over SSH.\n\
             export HERO_SANDBOX={sb}\n\
             export HERO_SANDBOX_NAME={name}\n\
             export HERO_WEB_PORT={port}\n\
             export HERO_PIDS_DIR={pids}\n\
             export HERO_HOME={home}\n\
             export HERO_SECRETS_DIR={secrets}\n\
             export HERO_BIN_DIR={bin}\n\
             export PATH={path}\n",
            sb = shell_quote(&d),
            name = shell_quote(&rec.name),
            port = rec.web_port,
            pids = shell_quote(&format!("{d}/pids")),
            home = shell_quote(&format!("{d}/home")),
            secrets = shell_quote(&format!("{d}/secrets")),
            bin = shell_quote(&self.cfg.bin_dir.to_string_lossy()),
            path = shell_quote(&path),
        );
        crate::compute::replace_file(&dir.join("env"), env.as_bytes())
    }

    fn vm_info(&self, name: &ResourceName, rec: &SandboxRecord) -> VmInfo {
        let dir = self.sandbox_dir(name);
        let d = dir.to_string_lossy().to_string();
        VmInfo {
            name: name.clone(),
            backend: "local".into(),
            ssh: SshTarget {
                host: "127.0.0.1".into(),
                port: rec.ssh_port,
                user: self.ssh_user.clone(),
            },
            private_ip: Some("127.0.0.1".into()),
            mycelium_ip: None,
            web_backend_url: format!("http://127.0.0.1:{}", rec.web_port),
            manifest_path: format!("{d}/home/hero/cfg/cockpit/services.toml"),
            work_dir: format!("{d}/work"),
            env_file: Some(format!("{d}/env")),
            node_id: None,
            backend_id: Some(d),
            secret_store: crate::compute::VmSecretStore::ProxyFiles,
        }
    }

    /// Make sure the sandbox's sshd runs with `rec`'s port and key; restart it if dead, moving to
    /// a new port if the old one was taken meanwhile. Returns the (possibly updated) record.
    async fn ensure_sshd(
        &self,
        name: &ResourceName,
        rec: SandboxRecord,
        out: &OutputSink,
    ) -> Result<SandboxRecord, BackendError> {
        let rec = self.ensure_sshd_once(name, rec, out).await?;
        self.sshd_watch
            .watch(&name.to_string(), self.sandbox_dir(name), rec.ssh_port);
        Ok(rec)
    }

    async fn ensure_sshd_once(
        &self,
        name: &ResourceName,
        mut rec: SandboxRecord,
        out: &OutputSink,
    ) -> Result<SandboxRecord, BackendError> {
        let files = self.sshd_files(name);
        if files.live_pid().is_some()
            && tokio::net::TcpStream::connect(("127.0.0.1", rec.ssh_port))
                .await
                .is_ok()
        {
            // Keep the authorized key in line with the request (adoption after a key change).
            let ak = files.authorized_keys();
            let current = std::fs::read_to_string(&ak).unwrap_or_default();
            if current.trim() != rec.public_key.trim() {
                std::fs::write(&ak, format!("{}\n", rec.public_key.trim()))
                    .map_err(BackendError::io(&ak))?;
            }
            return Ok(rec);
        }
        if let Some(pid) = files.live_pid() {
            kill_pid(pid, Duration::from_secs(2)).await;
        }
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                let _ports = self.ports_lock.lock().unwrap_or_else(|e| e.into_inner());
                [rec.ssh_port] = self.fresh_ports(&[rec.web_port])?;
                self.write_record(name, &rec)?;
            }
            sshd::write_config(&files, rec.ssh_port, &rec.public_key)
                .await
                .map_err(|e| BackendError::Config(e.to_string()))?;
            match sshd::start(
                &self.cfg.sshd_bin,
                &files,
                rec.ssh_port,
                self.cfg.sshd_start_timeout,
            )
            .await
            {
                Ok(pid) => {
                    out(&format!(
                        "sandbox {name}: sshd pid {pid} on 127.0.0.1:{}",
                        rec.ssh_port
                    ));
                    return Ok(rec);
                }
                Err(sshd::SshdError::NotUp { .. }) => {
                    last = format!("sshd did not come up on port {}", rec.ssh_port);
                    if let Some(pid) = files.live_pid() {
                        kill_pid(pid, Duration::from_secs(2)).await;
                    }
                }
                Err(e) => {
                    return Err(BackendError::ToolFailed {
                        tool: "sshd".into(),
                        status: "error".into(),
                        tail: vec![e.to_string()],
                        transient: false,
                    })
                }
            }
        }
        Err(BackendError::ToolFailed {
            tool: "sshd".into(),
            status: "not listening".into(),
            tail: vec![last],
            transient: true,
        })
    }

    /// PIDs that belong to the sandbox: pid files under `pids/` and `sshd/`, plus any process whose
    /// command line mentions the sandbox directory (catches strays whose pid file was lost).
    fn sandbox_pids(&self, dir: &Path) -> Vec<u32> {
        let mut pids = Vec::new();
        for sub in ["pids", "sshd"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "pid") {
                        if let Some(pid) = read_pid_file(&p) {
                            pids.push(pid);
                        }
                    }
                }
            }
        }
        let needle = format!("{}/", dir.to_string_lossy());
        let me = std::process::id();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                if pid_cmdline(pid).is_some_and(|c| c.contains(&needle)) {
                    pids.push(pid);
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|p| pid_is_ours(*p, &needle));
        pids
    }

    fn save_routes(&self) -> Result<(), BackendError> {
        let table = self
            .gateway
            .routes
            .read()
            .map_err(|_| BackendError::Config("gateway route table poisoned".into()))?
            .clone();
        table.save(&self.gateway.routes_file)
    }

    fn gateway_info(&self, label: &str, route: &Route) -> Result<GatewayInfo, BackendError> {
        let name = ResourceName::parse(&route.name)
            .ok_or_else(|| BackendError::InvalidName(route.name.clone()))?;
        let port = self.gateway_addr.port();
        Ok(GatewayInfo {
            name,
            fqdn: format!("{label}.localhost"),
            url: format!("http://{label}.localhost:{port}/"),
            backend_url: format!("http://{}", route.target),
            connect_addr: Some(self.gateway_addr.to_string()),
        })
    }
}

fn validate_label(label: &str) -> Result<(), BackendError> {
    if label.is_empty()
        || label.len() > 63
        || !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(BackendError::InvalidName(format!(
            "gateway label {label:?} must be lowercase letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

#[async_trait]
impl ComputeBackend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn placement(&self) -> crate::compute::Placement {
        crate::compute::Placement::ThisMachine
    }

    async fn deploy_vm(&self, req: &VmRequest, out: OutputSink) -> Result<VmInfo, BackendError> {
        self.injected_latency().await;
        #[cfg(feature = "test-hooks")]
        {
            if LocalFaults::take(&self.faults.deploy_vm_timeouts) {
                return Err(BackendError::Timeout {
                    op: "deploy_vm".into(),
                    detail: "injected fault".into(),
                });
            }
            if LocalFaults::take(&self.faults.deploy_vm_unavailable) {
                return Err(BackendError::Unavailable {
                    op: "deploy_vm".into(),
                    detail: "injected fault: HTTP 503".into(),
                });
            }
        }
        let name = &req.name;
        let lock = self.lock_for(&name.to_string());
        let _g = lock.lock().await;
        let dir = self.sandbox_dir(name);
        if let Some(mut rec) = self.read_record(name)? {
            out(&format!("sandbox {name} exists: adopting it"));
            rec.public_key = req.ssh_public_key.trim().to_string();
            self.write_record(name, &rec)?;
            self.write_env(name, &rec)?;
            let rec = self.ensure_sshd(name, rec, &out).await?;
            return Ok(self.vm_info(name, &rec));
        }
        if dir.exists() {
            // A half-made sandbox from an interrupted attempt: clear it and start over.
            out(&format!(
                "sandbox {name}: removing an incomplete earlier attempt"
            ));
            for pid in self.sandbox_pids(&dir) {
                kill_pid(pid, Duration::from_secs(2)).await;
            }
            tokio::fs::remove_dir_all(&dir)
                .await
                .map_err(BackendError::io(&dir))?;
        }
        for sub in ["pids", "work", "logs", "home/hero/cfg/cockpit"] {
            let p = dir.join(sub);
            tokio::fs::create_dir_all(&p)
                .await
                .map_err(BackendError::io(&p))?;
        }
        let rec = {
            let _ports = self.ports_lock.lock().unwrap_or_else(|e| e.into_inner());
            let [ssh_port, web_port] = self.fresh_ports(&[])?;
            let rec = SandboxRecord {
                name: name.to_string(),
                ssh_port,
                web_port,
                public_key: req.ssh_public_key.trim().to_string(),
            };
            self.write_env(name, &rec)?;
            // The record is written before sshd starts so a crash after this point is adopted.
            self.write_record(name, &rec)?;
            rec
        };
        let rec = self.ensure_sshd(name, rec, &out).await?;
        out(&format!(
            "sandbox {name} ready: ssh 127.0.0.1:{}, web port {}",
            rec.ssh_port, rec.web_port
        ));
        Ok(self.vm_info(name, &rec))
    }

    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError> {
        let lock = self.lock_for(&name.to_string());
        let _g = lock.lock().await;
        let Some(rec) = self.read_record(name)? else {
            return Ok(None);
        };
        let rec = self
            .ensure_sshd(name, rec, &crate::compute::discard_output())
            .await?;
        Ok(Some(self.vm_info(name, &rec)))
    }

    /// A sandbox dir without its record: a delete that stopped part-way (its processes may still run).
    async fn remains(&self, name: &ResourceName) -> Result<Vec<String>, BackendError> {
        let dir = self.sandbox_dir(name);
        if !dir.exists() || self.read_record(name)?.is_some() {
            return Ok(Vec::new());
        }
        Ok(vec![format!(
            "sandbox dir {} without its record (an unfinished delete)",
            dir.display()
        )])
    }

    async fn delete_vm(&self, name: &ResourceName, out: OutputSink) -> Result<(), BackendError> {
        self.injected_latency().await;
        let lock = self.lock_for(&name.to_string());
        let _g = lock.lock().await;
        let dir = self.sandbox_dir(name);
        if !dir.exists() {
            return Ok(());
        }
        // Scan and kill until a scan finds nothing: a process may fork between a scan and the
        // kill (sshd's per-connection children re-exec with the sandbox's config path), and
        // under load a child can outlive one round. Bounded by a deadline.
        // The record goes first: an sshd watch (of this or another process's backend) restarts
        // only sandboxes that have one, so none is revived while this kills (`local_sshd_watch`).
        let _ = std::fs::rename(dir.join("sandbox.json"), dir.join("sandbox.json.deleting"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let pids = self.sandbox_pids(&dir);
            if pids.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                let gone = kill_pid(pid, Duration::from_secs(3)).await;
                out(&format!(
                    "sandbox {name}: pid {pid} {}",
                    if gone { "stopped" } else { "did not stop" }
                ));
            }
        }
        let left = self.sandbox_pids(&dir);
        if !left.is_empty() {
            return Err(BackendError::Unavailable {
                op: "delete_vm".into(),
                detail: format!("processes {left:?} of sandbox {name} would not die"),
            });
        }
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(BackendError::io(&dir))?;
        out(&format!("sandbox {name} removed"));
        Ok(())
    }

    async fn deploy_gateway(
        &self,
        req: &GatewayRequest,
        out: OutputSink,
    ) -> Result<GatewayInfo, BackendError> {
        self.injected_latency().await;
        #[cfg(feature = "test-hooks")]
        {
            if LocalFaults::take(&self.faults.deploy_gateway_timeouts) {
                return Err(BackendError::Timeout {
                    op: "deploy_gateway".into(),
                    detail: "injected fault".into(),
                });
            }
            if LocalFaults::take(&self.faults.deploy_gateway_unavailable) {
                return Err(BackendError::Unavailable {
                    op: "deploy_gateway".into(),
                    detail: "injected fault: HTTP 503".into(),
                });
            }
        }
        validate_label(&req.host_label)?;
        let target = req
            .backend_url
            .strip_prefix("http://")
            .map(|s| s.trim_end_matches('/').to_string())
            .filter(|s| s.starts_with("127.0.0.1:") || s.starts_with("localhost:"))
            .ok_or_else(|| BackendError::Rejected {
                op: "deploy_gateway".into(),
                detail: format!(
                    "local gateway backends must be http://127.0.0.1:<port>, got {}",
                    req.backend_url
                ),
            })?;
        let _g = self.routes_lock.lock().await;
        let name = req.name.to_string();
        let route = Route {
            name: name.clone(),
            target,
        };
        {
            let mut table = self
                .gateway
                .routes
                .write()
                .map_err(|_| BackendError::Config("gateway route table poisoned".into()))?;
            if let Some(existing) = table.routes.get(&req.host_label) {
                if existing.name != name {
                    return Err(BackendError::NameTaken {
                        label: req.host_label.clone(),
                        by: format!(" by {}", existing.name),
                    });
                }
            }
            // One gateway per resource name: drop a route of this name under another label.
            table
                .routes
                .retain(|l, r| r.name != name || *l == req.host_label);
            table.routes.insert(req.host_label.clone(), route.clone());
        }
        self.save_routes()?;
        out(&format!(
            "gateway {}.localhost:{} -> {}",
            req.host_label,
            self.gateway_addr.port(),
            route.target
        ));
        self.gateway_info(&req.host_label, &route)
    }

    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError> {
        let n = name.to_string();
        let found = self
            .gateway
            .routes
            .read()
            .map_err(|_| BackendError::Config("gateway route table poisoned".into()))?
            .routes
            .iter()
            .find(|(_, r)| r.name == n)
            .map(|(l, r)| (l.clone(), r.clone()));
        match found {
            Some((label, route)) => Ok(Some(self.gateway_info(&label, &route)?)),
            None => Ok(None),
        }
    }

    async fn delete_gateway(
        &self,
        name: &ResourceName,
        out: OutputSink,
    ) -> Result<(), BackendError> {
        self.injected_latency().await;
        let _g = self.routes_lock.lock().await;
        let n = name.to_string();
        let removed = {
            let mut table = self
                .gateway
                .routes
                .write()
                .map_err(|_| BackendError::Config("gateway route table poisoned".into()))?;
            let before = table.routes.len();
            table.routes.retain(|_, r| r.name != n);
            before != table.routes.len()
        };
        if removed {
            self.save_routes()?;
            out(&format!("gateway route of {name} removed"));
        }
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<Resource>, BackendError> {
        let mut out = Vec::new();
        let sandboxes = self.cfg.root.join("sandboxes");
        let rd = std::fs::read_dir(&sandboxes).map_err(BackendError::io(&sandboxes))?;
        let mut entries: Vec<_> = rd.flatten().filter(|e| e.path().is_dir()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let raw = e.file_name().to_string_lossy().to_string();
            let name = ResourceName::parse(&raw);
            let detail = match name
                .as_ref()
                .and_then(|n| self.read_record(n).ok().flatten())
            {
                Some(rec) => {
                    let sshd = match name.as_ref().and_then(|n| self.sshd_files(n).live_pid()) {
                        Some(pid) => format!("sshd pid {pid}"),
                        None => "sshd not running".into(),
                    };
                    format!(
                        "ssh port {}, web port {}, {sshd}",
                        rec.ssh_port, rec.web_port
                    )
                }
                None => "incomplete sandbox (no sandbox.json)".into(),
            };
            out.push(Resource {
                kind: ResourceKind::Vm,
                raw_name: raw,
                name,
                detail,
            });
        }
        let table = self
            .gateway
            .routes
            .read()
            .map_err(|_| BackendError::Config("gateway route table poisoned".into()))?
            .clone();
        for (label, route) in table.routes {
            out.push(Resource {
                kind: ResourceKind::Gateway,
                name: ResourceName::parse(&route.name),
                raw_name: route.name,
                detail: format!("{label}.localhost -> {}", route.target),
            });
        }
        Ok(out)
    }
}
