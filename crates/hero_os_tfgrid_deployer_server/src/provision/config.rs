//! The `[provision]` section of the server config: which backend, how many jobs at once, how
//! patient each step is, and where the local sandbox / the grid live. Every default is chosen so
//! `demo` works on a laptop with no configuration at all (local backend).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hero_os_tfgrid_deployer_backends::manifest::Profiles;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisionConfig {
    /// Compute backend used when a call does not name one: `local`, `opentofu`, `hero_compute`.
    pub backend: String,
    /// Jobs running at once; the rest wait in state `queued`. Grid deploys are slow and the
    /// grid rate-limits, so this protects both the grid and the operator's wallet.
    pub max_concurrent_jobs: usize,
    /// How often a running job proves it is alive (`heartbeat_at_ms`).
    pub heartbeat_ms: u64,
    /// A running job whose heartbeat is older than this is failed by the reaper (Coder's hang
    /// detector, but per job and with the reason recorded).
    pub stale_after_ms: u64,
    /// How often the reaper looks.
    pub reaper_interval_ms: u64,
    /// Attempts per step for transient errors.
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt, with jitter, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Per-step deadline overrides in seconds, by step name (defaults: each step type's `deadline`).
    pub step_deadline_secs: BTreeMap<String, u64>,
    /// Poll interval of `wait_ssh` and `verify_health`.
    pub poll_ms: u64,
    /// Manifest profile used when a call does not name one.
    pub default_profile: String,
    /// Extra or overriding profiles: name → service list.
    pub profiles: BTreeMap<String, Vec<String>>,
    /// Bootstrap script (`setup-binaries.sh`) to upload and run; default: the embedded stand-in
    /// for the local sandbox.
    pub bootstrap_script: Option<PathBuf>,
    /// Path checked through the public gateway URL.
    pub health_path: String,
    pub local: LocalSection,
    pub grid: GridSection,
    pub opentofu: OpenTofuSection,
    pub hero_compute: HeroComputeSection,
    /// When VMs expire and how the server warns first (issue 14).
    pub expiry: crate::fleet::expiry::ExpiryConfig,
    /// How ready VMs are kept in step with the admin list (`crate::fleet::access`).
    pub access: crate::fleet::access::AccessConfig,
    /// Test builds only: a file holding seconds to add to the wall clock (a controlled clock
    /// for the expiry tests; read at every reading of the clock).
    pub test_clock_offset_file: Option<PathBuf>,
    /// Test builds only (feature `test-hooks`): abort the process when this step starts
    /// (`<step>`) or after its work but before it is recorded done (`<step>:end`).
    pub test_crash_at: Option<String>,
    /// Test builds only: a JSON file of fault switches read at each fault point.
    pub test_faults_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSection {
    /// Root of sandboxes and the gateway's routes; default `<data_dir>/local`.
    pub root: Option<PathBuf>,
    /// Where the local gateway listens (port 0: any free port).
    pub gateway_listen: SocketAddr,
    /// OpenSSH server binary.
    pub sshd_bin: PathBuf,
    /// Directory of the sandbox's Hero stack stand-ins (`hero_proxy`, `hero_cockpit_standin`);
    /// default: next to the server's executable.
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridSection {
    /// `main`, `test`, `qa` or `dev`.
    pub network: String,
    /// Override gridproxy's base URL (tests, mirrors).
    pub gridproxy_url: Option<String>,
    /// Candidate gateway nodes (default: the freefarm gateway nodes).
    pub candidate_nodes: Vec<u32>,
    /// The deployer's TFChain twin id: nodes it rents become eligible (gridproxy
    /// `available_for`). `None`: only nodes nobody rents.
    pub twin_id: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenTofuSection {
    pub binary: PathBuf,
    /// Per-user working directories; default `<data_dir>/opentofu`.
    pub workdir: Option<PathBuf>,
    /// Exact terraform-provider-grid version to pin (`1.11.2`, `1.11.2-rc1`…); its release
    /// channel must match `grid.network`. `None`: the pinned default of the network
    /// (`provider_pin::default_version`).
    pub provider_version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeroComputeSection {
    /// Default `<socket_dir>/hero_compute/rpc.sock`.
    pub socket: Option<PathBuf>,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        ProvisionConfig {
            backend: "local".into(),
            max_concurrent_jobs: 4,
            heartbeat_ms: 5_000,
            stale_after_ms: 120_000,
            reaper_interval_ms: 15_000,
            max_attempts: 4,
            backoff_base_ms: 1_000,
            backoff_max_ms: 30_000,
            step_deadline_secs: BTreeMap::new(),
            poll_ms: 1_000,
            default_profile: "demo".into(),
            profiles: BTreeMap::new(),
            bootstrap_script: None,
            health_path: "/health".into(),
            local: LocalSection::default(),
            grid: GridSection::default(),
            opentofu: OpenTofuSection::default(),
            hero_compute: HeroComputeSection::default(),
            expiry: Default::default(),
            access: Default::default(),
            test_clock_offset_file: None,
            test_crash_at: None,
            test_faults_file: None,
        }
    }
}

impl Default for LocalSection {
    fn default() -> Self {
        LocalSection {
            root: None,
            gateway_listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            sshd_bin: PathBuf::from("/usr/sbin/sshd"),
            bin_dir: None,
        }
    }
}

impl Default for GridSection {
    fn default() -> Self {
        GridSection {
            network: "main".into(),
            gridproxy_url: None,
            candidate_nodes: hero_os_tfgrid_deployer_backends::DEFAULT_CANDIDATE_NODES.to_vec(),
            twin_id: None,
        }
    }
}

impl Default for OpenTofuSection {
    fn default() -> Self {
        OpenTofuSection {
            binary: PathBuf::from("tofu"),
            workdir: None,
            provider_version: None,
        }
    }
}

impl ProvisionConfig {
    /// Checks values that serde cannot; messages say what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.backend.as_str(), "local" | "opentofu" | "hero_compute") {
            return Err(format!(
                "provision.backend must be local, opentofu or hero_compute, not {:?}",
                self.backend
            ));
        }
        if self.max_concurrent_jobs == 0 {
            return Err("provision.max_concurrent_jobs must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("provision.max_attempts must be at least 1".into());
        }
        if self.heartbeat_ms == 0 || self.stale_after_ms <= self.heartbeat_ms * 2 {
            return Err(
                "provision.stale_after_ms must be more than twice provision.heartbeat_ms".into(),
            );
        }
        if self.profile(&self.default_profile).is_none() {
            return Err(format!(
                "provision.default_profile {:?} is not a known profile",
                self.default_profile
            ));
        }
        // At start-up, not at the first grid job minutes later: a mistyped network is the config's error.
        if let Err(e) = self
            .grid
            .network
            .parse::<hero_os_tfgrid_deployer_backends::Network>()
        {
            return Err(format!("provision.grid.network: {e}"));
        }
        if self.expiry.default_days > hero_os_tfgrid_deployer_sdk::jobs::MAX_EXTEND_DAYS {
            return Err(format!(
                "provision.expiry.default_days {}: at most {} (ten years), or 0 for never",
                self.expiry.default_days,
                hero_os_tfgrid_deployer_sdk::jobs::MAX_EXTEND_DAYS
            ));
        }
        for name in self.step_deadline_secs.keys() {
            if !crate::provision::steps::is_step_name(name) {
                return Err(format!(
                    "provision.step_deadline_secs: unknown step {name:?}"
                ));
            }
        }
        self.expiry.validate()?;
        self.access.validate()?;
        #[cfg(not(feature = "test-hooks"))]
        if self.test_crash_at.is_some()
            || self.test_faults_file.is_some()
            || self.test_clock_offset_file.is_some()
        {
            return Err(
                "test_crash_at / test_faults_file exist only in test builds (feature test-hooks)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Manifest profiles: the built-in `demo`, then configured ones (which may override it).
    pub fn manifest_profiles(&self) -> Profiles {
        let mut profiles = Profiles::default();
        profiles
            .profiles
            .extend(self.profiles.iter().map(|(k, v)| (k.clone(), v.clone())));
        profiles
    }

    /// Services of a profile: configured ones first, then the built-in `demo`.
    pub fn profile(&self, name: &str) -> Option<Vec<String>> {
        self.manifest_profiles().profiles.remove(name)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}
