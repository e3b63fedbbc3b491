//! Fault injection for tests. Exists only with the cargo feature `test-hooks`; in other builds
//! every hook is a no-op the compiler removes, and the config refuses the test settings.
//!
//! Steps hold no test code: the runner asks [`Faults`] for its crash and stall points, and the
//! backend and agent faults are wrappers ([`FaultyBackend`], [`FaultyAgent`]) the server puts
//! around the real ones in test builds, so the step code under test is the production code.
//!
//! * crash: `test_crash_at = "<step>"` aborts the process (like `kill -9`) when that step starts;
//!   `"<step>:end"` after the step did its work but before it is recorded done — the instant that
//!   tests idempotency hardest.
//! * faults file (`test_faults_file`, JSON, re-read at every fault point so a test can change it
//!   while the server runs):
//!   `{"deploy_vm_timeouts": n, "deploy_vm_unavailable": n, "deploy_gateway_timeouts": n,
//!     "deploy_gateway_unavailable": n, "ssh_refused": bool, "bootstrap_exit1": bool,
//!     "health_503": bool, "stall_at": "<step>", "inventory_hold": bool, "delete_hold": bool}`.
//!   `inventory_hold` makes a backend's `inventory` wait (writing `<faults file>.inventory_held` when it starts
//!   waiting) until the switch is off, at most 60 s: a reconcile whose snapshot is old by the time its findings
//!   arrive. `delete_hold` does the same to `delete_vm` (`<faults file>.delete_held`): a slow cleanup.
//!   Counters are consumed (written back decremented) and passed to the local backend's own
//!   fault hooks, so the backend itself fails the call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Placement, Resource,
    ResourceName, VmInfo, VmRequest,
};
use tokio::time::Instant;

use super::agent::{AttemptFn, HttpAnswer, LineFn, SshAccess, VmAgent};
use super::steps::StepError;

#[cfg(feature = "test-hooks")]
use hero_os_tfgrid_deployer_backends::local::LocalFaults;

/// The fault switches of one server.
#[derive(Clone, Default)]
pub struct Faults {
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    crash_at: Option<String>,
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    file: Option<PathBuf>,
    #[cfg(feature = "test-hooks")]
    local: Option<Arc<LocalFaults>>,
    #[cfg(not(feature = "test-hooks"))]
    _local: Option<Arc<()>>,
}

/// Kinds of counted backend faults.
#[derive(Debug, Clone, Copy)]
enum BackendFault {
    DeployVm,
    DeployGateway,
}

impl Faults {
    pub fn none() -> Faults {
        Faults::default()
    }

    #[cfg(feature = "test-hooks")]
    pub fn new(
        crash_at: Option<String>,
        file: Option<PathBuf>,
        local: Option<Arc<LocalFaults>>,
    ) -> Faults {
        Faults {
            crash_at,
            file,
            local,
        }
    }

    /// Aborts the process if configured for this instant (`step` or `step:end`).
    pub fn crash_point(&self, _step: &str, _end: bool) {
        #[cfg(feature = "test-hooks")]
        if let Some(at) = &self.crash_at {
            let want = if _end {
                format!("{_step}:end")
            } else {
                _step.to_owned()
            };
            if *at == want {
                tracing::error!(at = %at, "test hook: aborting the process");
                std::process::abort();
            }
        }
    }

    #[cfg(feature = "test-hooks")]
    fn read(&self) -> serde_json::Map<String, serde_json::Value> {
        self.file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    }

    /// A boolean switch.
    fn flag(&self, _name: &str) -> bool {
        #[cfg(feature = "test-hooks")]
        {
            return self
                .read()
                .get(_name)
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
        }
        #[allow(unreachable_code)]
        false
    }

    /// The step that should hang without heartbeats.
    pub fn stall_at(&self, _step: &str) -> bool {
        #[cfg(feature = "test-hooks")]
        {
            return self.read().get("stall_at").and_then(|v| v.as_str()) == Some(_step);
        }
        #[allow(unreachable_code)]
        false
    }

    /// Consumes one unit of a counter; true if the fault fires.
    #[cfg(feature = "test-hooks")]
    fn take(&self, name: &str) -> bool {
        let Some(path) = &self.file else { return false };
        let mut map = self.read();
        let n = map.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
        if n == 0 {
            return false;
        }
        map.insert(name.to_owned(), serde_json::Value::from(n - 1));
        let _ = std::fs::write(path, serde_json::Value::Object(map).to_string());
        true
    }

    /// Arms the local backend's own fault hooks for the next call, from the faults file.
    fn arm_backend(&self, _which: BackendFault) {
        #[cfg(feature = "test-hooks")]
        if let Some(local) = &self.local {
            use std::sync::atomic::Ordering;
            let (t, u) = match _which {
                BackendFault::DeployVm => (&local.deploy_vm_timeouts, &local.deploy_vm_unavailable),
                BackendFault::DeployGateway => (
                    &local.deploy_gateway_timeouts,
                    &local.deploy_gateway_unavailable,
                ),
            };
            let prefix = match _which {
                BackendFault::DeployVm => "deploy_vm",
                BackendFault::DeployGateway => "deploy_gateway",
            };
            if self.take(&format!("{prefix}_timeouts")) {
                t.fetch_add(1, Ordering::SeqCst);
            } else if self.take(&format!("{prefix}_unavailable")) {
                u.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Waits while the switch `name` (`inventory_hold`, `delete_hold`) is on, at most 60 s, having written
    /// `<faults file>.<name>` when it starts waiting (see the module doc).
    async fn hold(&self, _name: &str) {
        #[cfg(feature = "test-hooks")]
        if self.flag(_name) {
            if let Some(path) = &self.file {
                let _ = std::fs::write(path.with_extension(_name.replace("_hold", "_held")), "");
            }
            let until = Instant::now() + Duration::from_secs(60);
            while self.flag(_name) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Mirrors the `health_503` switch into the local gateway, which then really answers 503.
    fn sync_health(&self) {
        #[cfg(feature = "test-hooks")]
        if let Some(local) = &self.local {
            local
                .health_503
                .store(self.flag("health_503"), std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A backend whose `deploy_vm` and `deploy_gateway` first arm the local backend's own fault hooks
/// from the faults file, so the backend itself fails the call (timeouts, 503s).
pub struct FaultyBackend {
    pub inner: Arc<dyn ComputeBackend>,
    pub faults: Faults,
}

#[async_trait]
impl ComputeBackend for FaultyBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn longest_call(&self) -> Option<Duration> {
        self.inner.longest_call()
    }
    fn placement(&self) -> Placement {
        self.inner.placement()
    }
    // Every method is forwarded, the defaulted ones too: a default here would answer "nothing
    // missing" for a backend that has a missing prerequisite (a job would be made, then fail).
    fn check_prerequisites(&self) -> Result<(), BackendError> {
        self.inner.check_prerequisites()
    }
    async fn prerequisites(&self) -> Result<(), BackendError> {
        self.inner.prerequisites().await
    }
    async fn deploy_vm(&self, req: &VmRequest, out: OutputSink) -> Result<VmInfo, BackendError> {
        self.faults.arm_backend(BackendFault::DeployVm);
        self.inner.deploy_vm(req, out).await
    }
    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError> {
        self.inner.get_vm(name).await
    }
    async fn remains(&self, name: &ResourceName) -> Result<Vec<String>, BackendError> {
        self.inner.remains(name).await
    }
    async fn delete_vm(&self, name: &ResourceName, out: OutputSink) -> Result<(), BackendError> {
        self.faults.hold("delete_hold").await;
        self.inner.delete_vm(name, out).await
    }
    async fn deploy_gateway(
        &self,
        req: &GatewayRequest,
        out: OutputSink,
    ) -> Result<GatewayInfo, BackendError> {
        self.faults.arm_backend(BackendFault::DeployGateway);
        self.inner.deploy_gateway(req, out).await
    }
    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError> {
        self.inner.get_gateway(name).await
    }
    async fn delete_gateway(
        &self,
        name: &ResourceName,
        out: OutputSink,
    ) -> Result<(), BackendError> {
        self.inner.delete_gateway(name, out).await
    }
    async fn inventory(&self) -> Result<Vec<Resource>, BackendError> {
        self.faults.hold("inventory_hold").await;
        self.inner.inventory().await
    }
}

/// An agent with the faults file's SSH and health switches: `ssh_refused` aims SSH at a loopback
/// port nothing listens on (so the refusal is real), `bootstrap_exit1` makes the bootstrap
/// command exit 1, `health_503` makes the local gateway really answer 503.
pub struct FaultyAgent {
    pub inner: Arc<dyn VmAgent>,
    pub faults: Faults,
}

#[async_trait]
impl VmAgent for FaultyAgent {
    async fn wait_ssh(
        &self,
        access: &SshAccess<'_>,
        deadline: Instant,
        poll: Duration,
        on_attempt: AttemptFn<'_>,
    ) -> Result<String, StepError> {
        if self.faults.flag("ssh_refused") {
            let mut target = access.target.clone();
            target.port = hero_os_tfgrid_deployer_backends::process::free_loopback_port()
                .map_err(|e| StepError::fatal("test.port", e.to_string()))?;
            let refused = SshAccess {
                target: &target,
                private_key: access.private_key,
                pinned: access.pinned.clone(),
            };
            return self
                .inner
                .wait_ssh(&refused, deadline, poll, on_attempt)
                .await;
        }
        self.inner
            .wait_ssh(access, deadline, poll, on_attempt)
            .await
    }
    async fn upload(
        &self,
        access: &SshAccess<'_>,
        path: &str,
        contents: &[u8],
        mode: Option<u32>,
    ) -> Result<(), StepError> {
        self.inner.upload(access, path, contents, mode).await
    }
    async fn run(
        &self,
        access: &SshAccess<'_>,
        command: &str,
        on_line: LineFn<'_>,
    ) -> Result<Option<u32>, StepError> {
        if self.faults.flag("bootstrap_exit1") {
            return self
                .inner
                .run(access, &format!("{command}; exit 1"), on_line)
                .await;
        }
        self.inner.run(access, command, on_line).await
    }
    async fn run_with_stdin(
        &self,
        access: &SshAccess<'_>,
        command: &str,
        stdin: &[u8],
        on_line: LineFn<'_>,
    ) -> Result<Option<u32>, StepError> {
        self.inner
            .run_with_stdin(access, command, stdin, on_line)
            .await
    }
    async fn http_status(&self, url: &str, connect_addr: Option<&str>) -> Result<u16, StepError> {
        self.faults.sync_health();
        self.inner.http_status(url, connect_addr).await
    }
    async fn http_get(
        &self,
        url: &str,
        connect_addr: Option<&str>,
    ) -> Result<HttpAnswer, StepError> {
        self.faults.sync_health();
        self.inner.http_get(url, connect_addr).await
    }
}
