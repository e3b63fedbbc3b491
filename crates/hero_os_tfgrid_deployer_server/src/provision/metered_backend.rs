//! A [`ComputeBackend`] that counts every failed call in the metrics (by backend, operation and
//! the backend's stable error code) and otherwise passes through. Installed around each backend
//! by `wiring`, outside the test-build fault wrapper, so injected faults are counted like real
//! ones.

use std::sync::Arc;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Placement, Resource,
    ResourceName, VmInfo, VmRequest,
};

use crate::metrics::MetricsSink;

pub struct MeteredBackend {
    pub inner: Arc<dyn ComputeBackend>,
    pub sink: Arc<dyn MetricsSink>,
}

impl MeteredBackend {
    fn count<T>(
        &self,
        operation: &'static str,
        r: Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        if let Err(e) = &r {
            self.sink
                .backend_call_failed(self.inner.kind(), operation, e.code());
        }
        r
    }
}

#[async_trait]
impl ComputeBackend for MeteredBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn longest_call(&self) -> Option<std::time::Duration> {
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
        self.count("deploy_vm", self.inner.deploy_vm(req, out).await)
    }
    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError> {
        self.count("get_vm", self.inner.get_vm(name).await)
    }
    async fn remains(&self, name: &ResourceName) -> Result<Vec<String>, BackendError> {
        self.count("remains", self.inner.remains(name).await)
    }
    async fn delete_vm(&self, name: &ResourceName, out: OutputSink) -> Result<(), BackendError> {
        self.count("delete_vm", self.inner.delete_vm(name, out).await)
    }
    async fn deploy_gateway(
        &self,
        req: &GatewayRequest,
        out: OutputSink,
    ) -> Result<GatewayInfo, BackendError> {
        self.count("deploy_gateway", self.inner.deploy_gateway(req, out).await)
    }
    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError> {
        self.count("get_gateway", self.inner.get_gateway(name).await)
    }
    async fn delete_gateway(
        &self,
        name: &ResourceName,
        out: OutputSink,
    ) -> Result<(), BackendError> {
        self.count("delete_gateway", self.inner.delete_gateway(name, out).await)
    }
    async fn inventory(&self) -> Result<Vec<Resource>, BackendError> {
        self.count("inventory", self.inner.inventory().await)
    }
}
