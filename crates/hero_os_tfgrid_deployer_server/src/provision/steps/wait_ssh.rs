//! `wait_ssh`: the VM answers SSH with the user's key; its host key is pinned on first contact.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_sdk::jobs::EventLevel;

use super::deploy_vm::{access_parts, current_vm};
use super::{JobContext, Step, StepCx, StepError};
use crate::provision::agent::SshAccess;
use crate::provision::facts::Fact;

pub struct WaitSsh;

impl WaitSsh {
    pub const NAME: &'static str = "wait_ssh";
}

#[async_trait]
impl Step for WaitSsh {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(600)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let (mut vm, key) = access_parts(s, ctx).await?;
        // A grid VM reports its (mycelium) IP some time after the deployment: poll for it first.
        let poll = s.poll();
        let mut n = 0u32;
        while vm.ssh.host.is_empty() {
            n += 1;
            s.line(
                EventLevel::Warn,
                Some(n),
                format!("{}: the VM has no IP yet", s.progress(n)),
            );
            if tokio::time::Instant::now() + poll >= s.deadline {
                return Err(StepError::fatal(
                    "vm.no_ip",
                    format!("the VM reported no IP within the step deadline ({n} polls)"),
                ));
            }
            tokio::time::sleep(poll).await;
            vm = current_vm(s, ctx).await?;
        }
        let access = SshAccess {
            target: &vm.ssh,
            private_key: key,
            pinned: ctx.host_key.clone(),
        };
        let on_attempt = |n: u32, why: &str| {
            s.line(
                EventLevel::Warn,
                Some(n),
                format!("{}: {why}", s.progress(n)),
            );
        };
        let fp = s
            .env
            .agent
            .wait_ssh(&access, s.deadline, poll, &on_attempt)
            .await?;
        if ctx.host_key.is_none() {
            s.record_with_outcome(Fact::HostKey {
                vm_id: ctx.vm_id,
                fingerprint: fp.clone(),
            });
            ctx.host_key = Some(fp.clone());
        }
        Ok(format!(
            "SSH answered as {}@{}:{}; host key {fp} pinned",
            vm.ssh.user, vm.ssh.host, vm.ssh.port
        ))
    }
}
