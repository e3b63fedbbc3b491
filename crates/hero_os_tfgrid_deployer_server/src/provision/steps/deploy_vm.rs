//! `deploy_vm`: the user's VM exists on the backend. Its row is recorded before the backend is
//! asked (persist, then act), so reconcile and decommission can always find what it made.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::{node_selection, BackendError, VmInfo, VmRequest, VmSpec};

use super::{JobContext, Step, StepCx, StepError};
use crate::provision::facts::Fact;

pub struct DeployVm;

impl DeployVm {
    pub const NAME: &'static str = "deploy_vm";
}

#[async_trait]
impl Step for DeployVm {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(900)
    }

    fn calls_backend(&self) -> bool {
        true
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let name = s.resource_name()?;
        let spec = ctx.spec.get_or_insert_with(VmSpec::default).clone();
        let key = match (&ctx.public_key, &ctx.key_fingerprint) {
            (Some(public_key), Some(fingerprint)) => crate::provision::sshkeys::PublicKeyFacts {
                public_key: public_key.clone(),
                fingerprint: fingerprint.clone(),
            },
            // A job from before the context carried the key.
            _ => s.keys.public(s.job.user_id).await?.ok_or_else(|| {
                StepError::fatal(
                    "ssh_key.missing",
                    "the user has no SSH key (ssh_key step not done)",
                )
            })?,
        };
        let vm_id = match ctx.vm_id {
            // The row was written with the job (`provision_vm`), so it exists before anything
            // here acts; this job, its node and the key the VM trusts are facts of the outcome.
            Some(vm_id) => {
                s.record_with_outcome(Fact::VmDeployedBy {
                    vm_id,
                    job_id: s.job.job_id,
                    node_id: ctx.node_id,
                    ssh_key_fingerprint: key.fingerprint.clone(),
                    now: s.now(),
                });
                vm_id
            }
            // A job created before its VM row came with it (or retried after its row was
            // decommissioned): the row first.
            None => {
                s.record_now(Fact::VmPlanned {
                    user_id: s.job.user_id,
                    forge_username: s.job.forge_username.clone(),
                    backend: s.job.backend.clone(),
                    name: name.to_string(),
                    node_id: ctx.node_id,
                    spec_json: serde_json::to_string(&spec).unwrap_or_else(|_| "{}".into()),
                    job_id: s.job.job_id,
                    ssh_key_fingerprint: key.fingerprint.clone(),
                    now: s.now(),
                })
                .await?
            }
        };
        ctx.vm_id = Some(vm_id);
        let backend = s.backend()?;
        // An earlier attempt failed on its node and cleared the choice: select again (the
        // failed node is in `excluded_nodes`).
        let chosen_here =
            backend.placement().has_nodes() && s.options.node_id.is_none() && ctx.node_id.is_none();
        if chosen_here {
            let why = super::select_node::choose(s, ctx).await?;
            s.say(format!("node chosen again after a failed deploy: {why}"));
        }
        let deployed = backend
            .deploy_vm(
                &VmRequest {
                    name: name.clone(),
                    spec,
                    ssh_public_key: key.public_key.clone(),
                    node_id: ctx.node_id,
                },
                s.sink(),
            )
            .await;
        let info = match deployed {
            Ok(info) => info,
            Err(e) => {
                exclude_failed_node(s, ctx, &e);
                return Err(e.into());
            }
        };
        record_vm_facts(s, vm_id, &info);
        let msg = format!(
            "VM {name} deployed on {} (ssh {}@{}:{}{})",
            info.backend,
            info.ssh.user,
            info.ssh.host,
            info.ssh.port,
            info.node_id
                .map(|n| format!(", node {n}"))
                .unwrap_or_default()
        );
        ctx.vm = Some(info);
        Ok(msg)
    }
}

/// After a failed deploy: when the failure points at the node
/// ([`node_selection::exclude_node_after`]) and the node was selected (not pinned by the
/// request), the node joins the job's excluded list and the choice is cleared, so the next
/// attempt (or `retry_job`) selects again instead of failing on the same node.
fn exclude_failed_node(s: &StepCx<'_>, ctx: &mut JobContext, err: &BackendError) {
    if s.options.node_id.is_some() || !node_selection::exclude_node_after(err) {
        return;
    }
    let Some(node) = ctx.node_id.take() else {
        return;
    };
    ctx.node_domain = None;
    if !ctx.excluded_nodes.contains(&node) {
        ctx.excluded_nodes.push(node);
    }
    s.say(format!(
        "deploy on node {node} failed ({}); node {node} is excluded and the next attempt selects another node",
        err.code()
    ));
    s.record_with_outcome(Fact::NodeExcluded {
        job_id: s.job.job_id,
        excluded: ctx.excluded_nodes.clone(),
    });
}

/// The VM's addresses as the backend reports them, with the step's outcome.
pub(super) fn record_vm_facts(s: &StepCx<'_>, vm_id: i64, info: &VmInfo) {
    s.record_with_outcome(Fact::VmAddresses {
        vm_id,
        private_ip: info.private_ip.clone(),
        mycelium_ip: info.mycelium_ip.clone(),
        backend_id: info.backend_id.clone(),
        node_id: info.node_id,
        now: s.now(),
    });
}

/// The VM as the backend sees it now (ports and IPs may change across restarts).
pub(super) async fn current_vm(s: &StepCx<'_>, ctx: &mut JobContext) -> Result<VmInfo, StepError> {
    let name = s.resource_name()?;
    match s.backend()?.get_vm(&name).await? {
        Some(vm) => {
            // Only a change (new port or IP after a restart) is worth a write.
            if let (Some(vm_id), true) = (ctx.vm_id, ctx.vm.as_ref() != Some(&vm)) {
                record_vm_facts(s, vm_id, &vm);
            }
            ctx.vm = Some(vm.clone());
            Ok(vm)
        }
        None => Err(StepError::fatal(
            "vm.gone",
            format!(
                "VM {name} no longer exists on the {} backend; decommission and provision again",
                s.job.backend
            ),
        )),
    }
}

/// The VM as it is now and the user's private key (unsealed once per job run, borrowed).
pub(super) async fn access_parts<'s>(
    s: &'s StepCx<'_>,
    ctx: &mut JobContext,
) -> Result<(VmInfo, &'s zeroize::Zeroizing<String>), StepError> {
    let vm = current_vm(s, ctx).await?;
    Ok((vm, s.private_key().await?))
}
