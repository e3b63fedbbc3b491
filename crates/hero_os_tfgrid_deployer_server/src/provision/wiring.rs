//! Builds the orchestrator from the server config: the compute backends it can use, the agent,
//! the bootstrap script and (test builds) the fault switches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hero_os_tfgrid_deployer_backends::{
    ComputeBackend, LocalBackend, LocalConfig, DEFAULT_BOOTSTRAP_SCRIPT,
};

use super::agent::SshHttpAgent;
use super::{faults, Parts, Provisioner};
use crate::config::Config;
use crate::service::Deployer;

/// Builds the [`Provisioner`] for `config`. Only the configured default backend is started (the
/// local one binds its gateway port; the grid ones need credentials).
pub async fn build(config: &Config, deployer: Deployer) -> Result<Provisioner, String> {
    let cfg = config.provision.clone();
    let mut backends: BTreeMap<String, Arc<dyn ComputeBackend>> = BTreeMap::new();
    #[cfg(feature = "test-hooks")]
    let local_faults: Option<Arc<hero_os_tfgrid_deployer_backends::local::LocalFaults>>;
    match cfg.backend.as_str() {
        "local" => {
            let root = cfg.local.root.clone().unwrap_or_else(|| config.data_dir.join("local"));
            let mut lc = LocalConfig::new(root);
            lc.gateway_listen = cfg.local.gateway_listen;
            lc.sshd_bin = cfg.local.sshd_bin.clone();
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
        other => {
            return Err(format!(
                "provision.backend = {other:?}: this server build wires only the `local` backend so far; \
                 the opentofu and hero_compute backends are not connected to the job runner yet"
            ))
        }
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
    Ok(Provisioner::new(Parts {
        deployer,
        config: cfg,
        backends,
        agent: Arc::new(SshHttpAgent),
        bootstrap_script,
        faults,
    }))
}
