//! `deploy_gateway`: the public URL routes to the VM's web port.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::GatewayRequest;

use super::deploy_vm::current_vm;
use super::{JobContext, Step, StepCx, StepError};
use crate::provision::facts::Fact;

pub struct DeployGateway;

impl DeployGateway {
    pub const NAME: &'static str = "deploy_gateway";
}

#[async_trait]
impl Step for DeployGateway {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn calls_backend(&self) -> bool {
        true
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let vm = match ctx.vm.clone() {
            Some(vm) => vm,
            None => current_vm(s, ctx).await?,
        };
        let name = s.resource_name()?;
        let backend = s.backend()?;
        let request = GatewayRequest {
            name: name.clone(),
            // On this machine the label is a host name: the username as a DNS label
            // (`deployer_test_x` → `deployer-test-x`).
            host_label: backend.placement().host_label(
                &name,
                &hero_os_tfgrid_deployer_sdk::username::host_label(&s.job.forge_username),
            ),
            backend_url: vm.web_backend_url.clone(),
            node_id: ctx.node_id,
        };
        // The SSH steps next need the user's private key: unseal it while the gateway is made
        // (a failure here is left to `wait_ssh`, which asks again and reports it).
        let (gw, _) = tokio::join!(backend.deploy_gateway(&request, s.sink()), s.private_key());
        let gw = gw?;
        s.record_with_outcome(Fact::Gateway {
            user_id: s.job.user_id,
            vm_id: ctx.vm_id,
            name: name.to_string(),
            fqdn: gw.fqdn.clone(),
            backend_url: gw.backend_url.clone(),
            node_id: ctx.node_id,
            url: gw.url.clone(),
            now: s.now(),
        });
        let msg = format!(
            "gateway {} -> {}; public URL {}",
            gw.fqdn, gw.backend_url, gw.url
        );
        ctx.gateway = Some(gw);
        Ok(msg)
    }
}
