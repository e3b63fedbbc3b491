//! Decommission steps, in reverse: `delete_gateway → delete_vm → mark_decommissioned`. Every step
//! treats "already gone" as success, so a decommission can always be finished.

use hero_os_tfgrid_deployer_backends::{ComputeBackend, OutputSink, ResourceName};
use hero_os_tfgrid_deployer_sdk::types::UserId;

use super::{Scope, StepError};
use crate::audit::{self, Actor};
use crate::error::ServiceError;
use crate::provision::{store, vms};

pub async fn delete_gateway(s: &Scope<'_>) -> Result<String, StepError> {
    let name = s.resource_name()?;
    let backend = s.backend()?;
    let existed = backend.get_gateway(&name).await?.is_some();
    backend.delete_gateway(&name, s.sink()).await?;
    let (user_id, now) = (s.job.user_id, s.p.deployer().clock.now());
    s.write(move |conn| -> Result<usize, ServiceError> {
        Ok(vms::mark_gateways_deleted(conn, user_id, now)?)
    })
    .await?;
    Ok(if existed {
        format!("gateway of {name} deleted")
    } else {
        format!("gateway of {name} already gone")
    })
}

pub async fn delete_vm(s: &Scope<'_>) -> Result<String, StepError> {
    let name = s.resource_name()?;
    let backend = s.backend()?;
    let existed = in_inventory(&*backend, &name).await?;
    backend.delete_vm(&name, s.sink()).await?;
    Ok(if existed {
        format!("VM {name} deleted")
    } else {
        format!("VM {name} already gone")
    })
}

async fn in_inventory(
    backend: &dyn ComputeBackend,
    name: &ResourceName,
) -> Result<bool, StepError> {
    Ok(backend
        .inventory()
        .await?
        .iter()
        .any(|r| r.name.as_ref() == Some(name)))
}

pub async fn mark_decommissioned(s: &Scope<'_>) -> Result<String, StepError> {
    let (user_id, now) = (s.job.user_id, s.p.deployer().clock.now());
    let (actor, username, job_id) = (
        s.job.actor.clone(),
        s.job.forge_username.clone(),
        s.job.job_id,
    );
    // The records, the user's status and the audit line are written with the job's end, so
    // "succeeded" and "decommissioned" are never seen apart.
    s.write_later(move |conn| {
        let n = vms::mark_vms_decommissioned(conn, user_id, now)?;
        vms::mark_gateways_deleted(conn, user_id, now)?;
        store::set_user_vm_status(conn, user_id, "decommissioned", now)?;
        audit::append(
            conn,
            now,
            audit::Entry {
                actor: &Actor(actor),
                action: "vm.decommission",
                subject: &format!("user:{username}"),
                outcome: "ok",
                detail: Some(&format!(
                    "job {job_id}: gateway and VM deleted; {n} VM record(s) kept as decommissioned; Forge account kept"
                )),
            },
        )?;
        Ok(())
    });
    Ok("VM records marked decommissioned (kept for audit); the Forge account stays".into())
}

/// Deletes the user's gateway and VM on `backend` and marks their rows gone; used by the cleanup
/// of a cancelled provision. Returns whether any VM row existed.
pub async fn remove_resources(
    p: &crate::provision::Provisioner,
    backend: &dyn ComputeBackend,
    user_id: UserId,
    name: &ResourceName,
    out: OutputSink,
) -> Result<bool, StepError> {
    backend.delete_gateway(name, out.clone()).await?;
    backend.delete_vm(name, out).await?;
    let now = p.deployer().clock.now();
    Ok(p.db()
        .write(move |conn| -> Result<bool, ServiceError> {
            let n = vms::mark_vms_decommissioned(conn, user_id, now)?;
            vms::mark_gateways_deleted(conn, user_id, now)?;
            Ok(n > 0)
        })
        .await?)
}
