//! Binds the provisioning methods of the SDK to the [`Provisioner`]. Thin: parse, check the
//! caller, call the core.

use hero_os_tfgrid_deployer_sdk::methods::*;

use super::Provisioner;
use crate::error::ServiceError;
use crate::rpc::{Caller, Registry};

/// Private keys leave the server only over the local unix socket (the TCP listener sits behind
/// the SSO edge, reachable from browsers).
fn require_local(caller: &Caller, what: &str) -> Result<(), ServiceError> {
    if caller.local {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!(
            "{what} is only allowed over the local unix socket"
        )))
    }
}

/// Serves every job, VM and reconcile method.
pub fn register(registry: &mut Registry, provisioner: Provisioner) {
    let p = provisioner.clone();
    registry.register::<ProvisionVm, _, _>(move |c, params| {
        let p = p.clone();
        async move { p.provision_vm(&c.actor, params).await }
    });
    let p = provisioner.clone();
    registry.register::<DecommissionVm, _, _>(move |c, params| {
        let p = p.clone();
        async move { p.decommission_vm(&c.actor, params.user_id).await }
    });
    let p = provisioner.clone();
    registry.register::<GetJob, _, _>(move |_, params| {
        let p = p.clone();
        async move { p.get_job(params.job_id).await }
    });
    let p = provisioner.clone();
    registry.register::<ListJobs, _, _>(move |_, params| {
        let p = p.clone();
        async move { p.list_jobs(params).await }
    });
    let p = provisioner.clone();
    registry.register::<CancelJob, _, _>(move |c, params| {
        let p = p.clone();
        async move { p.cancel_job(&c.actor, params.job_id).await }
    });
    let p = provisioner.clone();
    registry.register::<RetryJob, _, _>(move |c, params| {
        let p = p.clone();
        async move { p.retry_job(&c.actor, params.job_id).await }
    });
    let p = provisioner.clone();
    registry.register::<JobEvents, _, _>(move |_, params| {
        let p = p.clone();
        async move { p.job_events(params).await }
    });
    let p = provisioner.clone();
    registry.register::<GetVm, _, _>(move |_, params| {
        let p = p.clone();
        async move { p.get_vm(params.user_id).await }
    });
    let p = provisioner.clone();
    registry.register::<ExportSshKey, _, _>(move |c, params| {
        let p = p.clone();
        async move {
            require_local(&c, "export_ssh_key")?;
            p.export_ssh_key(&c.actor, params.user_id).await
        }
    });
    registry.register::<Reconcile, _, _>(move |c, params| {
        let p = provisioner.clone();
        async move { p.reconcile(&c.actor, params).await }
    });
}
