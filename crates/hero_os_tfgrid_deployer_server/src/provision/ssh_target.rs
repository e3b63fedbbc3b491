//! `deployer.vm_ssh_target`: where `vm ssh` connects. Asked of the backend at call time, not
//! read from the record: a local sandbox's sshd moves to a new port when it restarts, and a grid
//! VM's address is whatever the backend reports now.

use hero_os_tfgrid_deployer_backends::ResourceName;
use hero_os_tfgrid_deployer_sdk::jobs::VmSshAccess;
use hero_os_tfgrid_deployer_sdk::types::UserId;

use super::vms::live_vm;
use super::Provisioner;
use crate::error::ServiceError;

impl Provisioner {
    pub async fn vm_ssh_target(&self, user_id: UserId) -> Result<VmSshAccess, ServiceError> {
        let user = self.deployer().get_user(user_id).await?;
        let vm = self
            .db()
            .call(move |conn| -> Result<_, ServiceError> { Ok(live_vm(conn, user_id)?) })
            .await?
            .ok_or_else(|| {
                ServiceError::FailedPrecondition(format!(
                    "{} has no VM: deploy one with `vm deploy {}`",
                    user.forge_username, user.forge_username
                ))
            })?;
        if vm.state != "ready" {
            return Err(ServiceError::FailedPrecondition(format!(
                "{}'s VM is {}, not ready: see `job list --user {}`",
                user.forge_username, vm.state, user.forge_username
            )));
        }
        let name = ResourceName::parse(&vm.name).ok_or_else(|| {
            ServiceError::Internal(format!(
                "recorded VM name {:?} is not a resource name",
                vm.name
            ))
        })?;
        let info = self
            .backend(&vm.backend)?
            .get_vm(&name)
            .await
            .map_err(|e| ServiceError::Backend(format!("{}: {e}", vm.backend)))?
            .ok_or_else(|| {
                ServiceError::FailedPrecondition(format!(
                    "VM {} is recorded as ready but the {} backend does not have it; run `reconcile`",
                    vm.name, vm.backend
                ))
            })?;
        Ok(VmSshAccess {
            user_id,
            vm_name: vm.name,
            host: info.ssh.host,
            port: info.ssh.port,
            login: info.ssh.user,
            host_key_fingerprint: vm.host_key_fingerprint,
        })
    }
}
