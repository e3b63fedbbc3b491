//! `finalize`: the VM row says `ready`, the user's status says so, the audit log records it, and
//! the job's result carries the URL — all written with the job's end, so "succeeded" and "ready"
//! are never seen apart.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_sdk::jobs::ProvisionResult;

use super::{JobContext, Step, StepCx, StepError};
use crate::audit::{Actor, OwnedEntry};
use crate::provision::facts::Fact;

pub struct Finalize;

impl Finalize {
    pub const NAME: &'static str = "finalize";
}

#[async_trait]
impl Step for Finalize {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let initial_password_held = match ctx.initial_password_held {
            Some(held) => held,
            None => {
                s.env
                    .users
                    .get_user(s.job.user_id)
                    .await?
                    .initial_password_held
            }
        };
        let name = s.resource_name()?;
        // The gateway as it is now (a local gateway's address can change across restarts).
        if let Some(gw) = s.backend()?.get_gateway(&name).await? {
            ctx.gateway = Some(gw);
        }
        let url = ctx.gateway.as_ref().map(|g| g.url.clone()).ok_or_else(|| {
            StepError::fatal(
                "finalize.no_gateway",
                "no gateway recorded by earlier steps",
            )
        })?;
        let vm_id = ctx
            .vm_id
            .ok_or_else(|| StepError::fatal("finalize.no_vm", "no VM recorded by earlier steps"))?;
        s.record_with_outcome(Fact::VmReady {
            vm_id,
            user_id: s.job.user_id,
            url: url.clone(),
            host_key: ctx.host_key.clone(),
            ssh_key_fingerprint: ctx.key_fingerprint.clone(),
            spec_json: serde_json::to_string(&ctx.spec.clone().unwrap_or_default())
                .unwrap_or_else(|_| "{}".into()),
            node_id: ctx.node_id,
            now: s.now(),
            audit: OwnedEntry {
                actor: Actor(s.job.actor.clone()),
                action: "vm.provision".into(),
                subject: format!("user:{}", s.job.forge_username),
                outcome: "ok".into(),
                detail: Some(format!("job {}: VM {name} ready at {url}", s.job.job_id)),
            },
        });
        ctx.result = Some(ProvisionResult {
            url: url.clone(),
            forge_username: s.job.forge_username.clone(),
            initial_password_held,
            node_id: ctx.node_id,
            vm_name: name.to_string(),
            gate: ctx.gate.clone(),
        });
        Ok(format!("VM {name} ready at {url}"))
    }
}
