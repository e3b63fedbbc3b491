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

pub struct LazyBackend {
    kind: &'static str,
    build: Build,
    cell: tokio::sync::OnceCell<Arc<dyn ComputeBackend>>,
}

impl LazyBackend {
    pub fn new(kind: &'static str, build: Build) -> LazyBackend {
        LazyBackend {
            kind,
            build,
            cell: tokio::sync::OnceCell::new(),
        }
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
    async fn deploy_vm(&self, req: &VmRequest, out: OutputSink) -> Result<VmInfo, BackendError> {
        self.get().await?.deploy_vm(req, out).await
    }
    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError> {
        self.get().await?.get_vm(name).await
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
