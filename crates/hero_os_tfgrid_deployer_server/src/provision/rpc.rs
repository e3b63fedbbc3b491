//! Binds the provisioning methods of the SDK to the [`Provisioner`]. Thin: parse, check the
//! caller, call the core.

use hero_os_tfgrid_deployer_sdk::methods::*;

use super::Provisioner;
use crate::rpc::Registry;

/// Serves every job, VM and reconcile method.
pub fn register(registry: &mut Registry, provisioner: Provisioner) {
    let p = provisioner;
    registry.register_with::<ProvisionVm, _, _>(p.clone(), |p, c, params| async move {
        p.provision_vm(&c.actor, params).await
    });
    registry.register_with::<DecommissionVm, _, _>(p.clone(), |p, c, params| async move {
        p.decommission_vm(&c.actor, params.user_id).await
    });
    registry.register_with::<RepairVm, _, _>(p.clone(), |p, c, params| async move {
        p.repair_vm(&c.actor, params.user_id).await
    });
    registry.register_with::<RedeployVm, _, _>(p.clone(), |p, c, params| async move {
        p.redeploy_vm(&c.actor, params).await
    });
    registry.register_with::<GetJob, _, _>(p.clone(), |p, _, params| async move {
        p.get_job(params.job_id).await
    });
    registry.register_with::<ListJobs, _, _>(p.clone(), |p, _, params| async move {
        p.list_jobs(params).await
    });
    registry.register_with::<CancelJob, _, _>(p.clone(), |p, c, params| async move {
        p.cancel_job(&c.actor, params.job_id).await
    });
    registry.register_with::<RetryJob, _, _>(p.clone(), |p, c, params| async move {
        p.retry_job(&c.actor, params.job_id).await
    });
    registry.register_with::<JobEvents, _, _>(p.clone(), |p, _, params| async move {
        p.job_events(params).await
    });
    registry.register_with::<GetVm, _, _>(p.clone(), |p, _, params| async move {
        p.get_vm(params.user_id).await
    });
    // Private keys leave the server only over the local unix socket.
    registry.register_with::<ExportSshKey, _, _>(p.clone(), |p, c, params| async move {
        p.export_ssh_key(&c.actor, params.user_id).await
    });
    registry.register_with::<VmSshTarget, _, _>(p.clone(), |p, _, params| async move {
        p.vm_ssh_target(params.user_id).await
    });
    registry.register_with::<ForgetVm, _, _>(p.clone(), |p, c, params| async move {
        p.forget_vm(&c.actor, params).await
    });
    registry.register_with::<Reconcile, _, _>(p, |p, c, params| async move {
        p.reconcile(&c.actor, params).await
    });
}
