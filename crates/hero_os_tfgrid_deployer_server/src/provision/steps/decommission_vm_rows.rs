//! `mark_decommissioned`: the user's VM and gateway rows are marked gone (kept for audit), the
//! user's status says so and the audit log records it — with the job's end, so "succeeded" and
//! "decommissioned" are never seen apart. Also the cleanup of a cancelled provision
//! ([`remove_resources`]), which deletes the same things outside a step.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::{ComputeBackend, OutputSink, ResourceName};

use super::{JobContext, Step, StepCx, StepError};
use crate::audit::{Actor, OwnedEntry};
use crate::provision::facts::Fact;

pub struct MarkDecommissioned;

impl MarkDecommissioned {
    pub const NAME: &'static str = "mark_decommissioned";
}

#[async_trait]
impl Step for MarkDecommissioned {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn run(&self, s: &StepCx<'_>, _ctx: &mut JobContext) -> Result<String, StepError> {
        s.record_with_outcome(Fact::Decommissioned {
            user_id: s.job.user_id,
            backend: s.job.backend.clone(),
            now: s.now(),
            audit: OwnedEntry {
                actor: Actor(s.job.actor.clone()),
                action: "vm.decommission".into(),
                subject: format!("user:{}", s.job.forge_username),
                outcome: "ok".into(),
                // `{n}`: the number of VM rows marked, filled in when written.
                detail: Some(format!(
                    "job {}: gateway and VM deleted; {{n}} VM record(s) kept as decommissioned; Forge account kept",
                    s.job.job_id
                )),
            },
        });
        Ok("VM records marked decommissioned (kept for audit); the Forge account stays".into())
    }
}

/// Deletes the user's gateway and VM on `backend` (the cleanup of a cancelled provision, which
/// then records [`Fact::ResourcesRemoved`]).
pub async fn remove_resources(
    backend: &dyn ComputeBackend,
    name: &ResourceName,
    out: OutputSink,
) -> Result<(), StepError> {
    backend.delete_gateway(name, out.clone()).await?;
    backend.delete_vm(name, out).await?;
    Ok(())
}
