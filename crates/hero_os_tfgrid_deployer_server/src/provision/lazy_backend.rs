//! A compute backend built on first use. The grid backends need things the server may not have at
//! start (the TFGrid mnemonic is set through the running server's `secret_set`; hero_compute may
//! start after us), so starting the server never depends on them: the first job that uses the
//! backend builds it, and a failure is that job's precise, permanent error (`retry_job` tries
//! again once the operator fixed it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Resource, ResourceName,
    VmInfo, VmRequest,
};

type BuildFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn ComputeBackend>, BackendError>> + Send>>;
type Build = Box<dyn Fn() -> BuildFuture + Send + Sync>;
type CheckFuture = Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send>>;
/// The prerequisites of a backend not built yet, checked without building it (and without the
/// network), so a job can be refused when it is created.
pub type Precheck = Box<dyn Fn() -> CheckFuture + Send + Sync>;

pub struct LazyBackend {
    kind: &'static str,
    build: Build,
    precheck: Option<Precheck>,
    /// What [`ComputeBackend::longest_call`] says before the backend is built (the first deploy builds it).
    longest_call: Option<std::time::Duration>,
    cell: tokio::sync::OnceCell<Arc<dyn ComputeBackend>>,
}

impl LazyBackend {
    pub fn new(kind: &'static str, build: Build) -> LazyBackend {
        LazyBackend {
            kind,
            build,
            precheck: None,
            longest_call: None,
            cell: tokio::sync::OnceCell::new(),
        }
    }

    /// What [`ComputeBackend::prerequisites`] checks while the backend is not built yet.
    pub fn with_precheck(mut self, precheck: Precheck) -> LazyBackend {
        self.precheck = Some(precheck);
        self
    }

    /// What [`ComputeBackend::longest_call`] answers while the backend is not built yet.
    pub fn with_longest_call(mut self, longest: std::time::Duration) -> LazyBackend {
        self.longest_call = Some(longest);
        self
    }

    async fn get(&self) -> Result<&Arc<dyn ComputeBackend>, BackendError> {
        self.cell.get_or_try_init(|| (self.build)()).await
    }
}

#[async_trait]
impl ComputeBackend for LazyBackend {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn longest_call(&self) -> Option<std::time::Duration> {
        match self.cell.get() {
            Some(built) => built.longest_call(),
            None => self.longest_call,
        }
    }
    fn check_prerequisites(&self) -> Result<(), BackendError> {
        match self.cell.get() {
            Some(built) => built.check_prerequisites(),
            None => Ok(()),
        }
    }
    /// The built backend answers itself; before that, the precheck (if any). Never builds.
    async fn prerequisites(&self) -> Result<(), BackendError> {
        match (self.cell.get(), &self.precheck) {
            (Some(built), _) => built.prerequisites().await,
            (None, Some(precheck)) => precheck().await,
            (None, None) => Ok(()),
        }
    }
    async fn deploy_vm(&self, req: &VmRequest, out: OutputSink) -> Result<VmInfo, BackendError> {
        self.get().await?.deploy_vm(req, out).await
    }
    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError> {
        self.get().await?.get_vm(name).await
    }
    async fn remains(&self, name: &ResourceName) -> Result<Vec<String>, BackendError> {
        self.get().await?.remains(name).await
    }
    async fn delete_vm(&self, name: &ResourceName, out: OutputSink) -> Result<(), BackendError> {
        self.get().await?.delete_vm(name, out).await
    }
    async fn deploy_gateway(
        &self,
        req: &GatewayRequest,
        out: OutputSink,
    ) -> Result<GatewayInfo, BackendError> {
        self.get().await?.deploy_gateway(req, out).await
    }
    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError> {
        self.get().await?.get_gateway(name).await
    }
    async fn delete_gateway(
        &self,
        name: &ResourceName,
        out: OutputSink,
    ) -> Result<(), BackendError> {
        self.get().await?.delete_gateway(name, out).await
    }
    async fn inventory(&self) -> Result<Vec<Resource>, BackendError> {
        self.get().await?.inventory().await
    }
}
