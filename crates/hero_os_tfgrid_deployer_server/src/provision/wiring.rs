//! Builds the orchestrator from the server config: the compute backends it can use, the agent,
//! the bootstrap script and (test builds) the fault switches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, HeroComputeBackend, HeroComputeConfig, LocalBackend, LocalConfig,
    OpenTofuBackend, OpenTofuConfig, DEFAULT_BOOTSTRAP_SCRIPT,
};

use super::agent::SshHttpAgent;
use super::lazy_backend::LazyBackend;
use super::{faults, Parts, Provisioner};
use crate::config::Config;
use crate::service::Deployer;

/// Secret slot of the TFGrid mnemonic used by the OpenTofu backend (only ever put in `tofu`'s
/// environment).
pub const MNEMONIC_SLOT: &str = hero_secrets::slots::TFGRID_MNEMONIC;

/// Builds the [`Provisioner`] for `config`. The local backend is started only when it is the
/// default (it binds its gateway port); `opentofu` and `hero_compute` are always available and
/// built on first use (see [`LazyBackend`]).
pub async fn build(
    config: &Config,
    deployer: Deployer,
    metrics: Arc<dyn crate::metrics::MetricsSink>,
) -> Result<Provisioner, String> {
    let cfg = config.provision.clone();
    let mut backends: BTreeMap<String, Arc<dyn ComputeBackend>> = BTreeMap::new();
    #[cfg(feature = "test-hooks")]
    let mut local_faults: Option<Arc<hero_os_tfgrid_deployer_backends::local::LocalFaults>> = None;
    if cfg.backend == "local" {
        let root = cfg
            .local
            .root
            .clone()
            .unwrap_or_else(|| config.data_dir.join("local"));
        let mut lc = LocalConfig::new(root);
        lc.gateway_listen = cfg.local.gateway_listen;
        lc.sshd_bin = cfg.local.sshd_bin.clone();
        if let Some(dir) = &cfg.local.bin_dir {
            lc.bin_dir = dir.clone();
        }
        lc.sshd_start_timeout = Duration::from_secs(10);
        let local = LocalBackend::start(lc)
            .await
            .map_err(|e| format!("local backend: {e}"))?;
        tracing::info!(gateway = %local.gateway_addr(), "local backend ready");
        #[cfg(feature = "test-hooks")]
        {
            local_faults = Some(local.faults());
        }

        backends.insert("local".into(), Arc::new(local));
    }
    {
        let tofu = OpenTofuParts {
            secrets: deployer.secrets.clone(),
            workdir: cfg
                .opentofu
                .workdir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("opentofu")),
            tofu_bin: cfg.opentofu.binary.clone(),
            network: cfg.grid.network.clone(),
            provider_version: cfg.opentofu.provider_version.clone(),
        };
        let check = tofu.clone();
        backends.insert(
            "opentofu".into(),
            Arc::new(
                LazyBackend::new(
                    "opentofu",
                    Box::new(move || {
                        let tofu = tofu.clone();
                        Box::pin(async move {
                            let oc = tofu.config().await?;
                            let backend: Arc<dyn ComputeBackend> =
                                Arc::new(OpenTofuBackend::new(oc, Box::new(rand::rngs::OsRng)));
                            Ok(backend)
                        })
                    }),
                )
                .with_precheck(Box::new(move || {
                    let check = check.clone();
                    Box::pin(async move { check.config().await.map(drop) })
                }))
                .with_longest_call({
                    use hero_os_tfgrid_deployer_backends::opentofu as tofu;
                    tofu::longest_call_with(
                        tofu::DEFAULT_SHORT_TIMEOUT,
                        tofu::DEFAULT_APPLY_TIMEOUT,
                    )
                }),
            ),
        );
    }
    {
        let socket = cfg
            .hero_compute
            .socket
            .clone()
            .unwrap_or_else(|| config.socket_dir.join("hero_compute").join("rpc.sock"));
        let check = socket.clone();
        let gateways_file = config.data_dir.join("hero_compute").join("gateways.json");
        backends.insert(
            "hero_compute".into(),
            Arc::new(
                LazyBackend::new(
                    "hero_compute",
                    Box::new(move || {
                        let cfg = HeroComputeConfig {
                            gateways_file: Some(gateways_file.clone()),
                            ..HeroComputeConfig::new(socket.clone())
                        };
                        Box::pin(async move {
                            let backend: Arc<dyn ComputeBackend> =
                                Arc::new(HeroComputeBackend::connect(cfg).await?);
                            Ok(backend)
                        })
                    }),
                )
                .with_precheck(Box::new(move || {
                    let socket = check.clone();
                    Box::pin(async move { HeroComputeConfig::new(socket).check_prerequisites() })
                })),
            ),
        );
    }
    let bootstrap_script = match &cfg.bootstrap_script {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("provision.bootstrap_script {}: {e}", path.display()))?,
        None => DEFAULT_BOOTSTRAP_SCRIPT.to_owned(),
    };
    #[cfg(feature = "test-hooks")]
    let faults = faults::Faults::new(
        cfg.test_crash_at.clone(),
        cfg.test_faults_file.clone(),
        local_faults,
    );
    #[cfg(not(feature = "test-hooks"))]
    let faults = faults::Faults::none();
    #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))] // test builds wrap it below
    let mut agent: Arc<dyn super::agent::VmAgent> = Arc::new(SshHttpAgent);
    // Test builds: the backend and agent faults wrap the real ones (steps hold no test code).
    #[cfg(feature = "test-hooks")]
    {
        if let Some(local) = backends.remove("local") {
            backends.insert(
                "local".into(),
                Arc::new(faults::FaultyBackend {
                    inner: local,
                    faults: faults.clone(),
                }),
            );
        }
        agent = Arc::new(faults::FaultyAgent {
            inner: agent,
            faults: faults.clone(),
        });
    }
    // Outermost: every backend call's error is counted, injected faults included.
    let backends = backends
        .into_iter()
        .map(|(kind, inner)| {
            let metered: Arc<dyn ComputeBackend> =
                Arc::new(super::metered_backend::MeteredBackend {
                    inner,
                    sink: metrics.clone(),
                });
            (kind, metered)
        })
        .collect();
    Ok(Provisioner::new(Parts {
        deployer,
        config: cfg,
        backends,
        agent,
        bootstrap_script,
        nodes: None,
        faults,
        metrics,
    }))
}

/// What the OpenTofu backend is built from; the same values make the job-creation check and
/// the backend, so the check cannot pass for a config the backend would refuse.
#[derive(Clone)]
struct OpenTofuParts {
    secrets: Arc<dyn hero_secrets::SecretStore>,
    workdir: std::path::PathBuf,
    tofu_bin: std::path::PathBuf,
    network: String,
    provider_version: Option<String>,
}

impl OpenTofuParts {
    /// The backend's config with every prerequisite checked (no network): network name, the
    /// mnemonic in the secret store, `tofu` executable, the provider version's channel. A
    /// missing mnemonic says how to store it.
    async fn config(&self) -> Result<OpenTofuConfig, BackendError> {
        let network: hero_os_tfgrid_deployer_backends::Network = self
            .network
            .parse()
            .map_err(|e| BackendError::Config(format!("provision.grid.network: {e}")))?;
        let mnemonic = self
            .secrets
            .get(MNEMONIC_SLOT)
            .await
            .map_err(|e| BackendError::Config(format!("secret store: {e}")))?;
        let missing = mnemonic.is_none();
        let mut oc = OpenTofuConfig::new(
            self.workdir.clone(),
            network,
            zeroize::Zeroizing::new(mnemonic.map(|m| m.expose().to_owned()).unwrap_or_default()),
        );
        oc.tofu_bin = self.tofu_bin.clone();
        oc.provider_version = self.provider_version.clone();
        oc.check_prerequisites().map_err(|e| match e {
            BackendError::Config(msg) if missing => BackendError::Config(format!(
                "{msg}: store it with `hero_os_tfgrid_deployer secret set {MNEMONIC_SLOT}` (reads stdin), then retry"
            )),
            other => other,
        })?;
        Ok(oc)
    }
}
