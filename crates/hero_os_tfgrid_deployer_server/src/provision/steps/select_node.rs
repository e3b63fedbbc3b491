//! `select_node`: the grid node the VM goes on — pinned by the request, kept from an earlier
//! attempt, or chosen through the [`NodeSelector`](hero_os_tfgrid_deployer_backends::NodeSelector)
//! of the step's environment. A backend that places VMs on this machine has no node to choose.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::node_selection::{FeatureNeeds, Requirements};
use hero_os_tfgrid_deployer_backends::VmSpec;

use super::{JobContext, Step, StepCx, StepError};

pub struct SelectNode;

impl SelectNode {
    pub const NAME: &'static str = "select_node";
}

#[async_trait]
impl Step for SelectNode {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let placement = s.backend()?.placement();
        if !placement.has_nodes() {
            // `provision_vm` refuses a pinned node for such a backend; a job from before that
            // check says it ignores it.
            let ignored = s
                .options
                .node_id
                .map(|n| format!(" (node {n} of the request ignored)"))
                .unwrap_or_default();
            return Ok(format!(
                "{} backend: sandboxes run on this machine, no grid node needed; selection skipped{ignored}",
                s.job.backend
            ));
        }
        if let Some(node) = s.options.node_id {
            ctx.node_id = Some(node);
            return Ok(format!(
                "node {node} pinned by the request; selection skipped"
            ));
        }
        if let (Some(node), Some(domain)) = (ctx.node_id, ctx.node_domain.as_ref()) {
            return Ok(format!(
                "node {node} ({domain}) chosen by an earlier attempt; kept"
            ));
        }
        choose(s, ctx).await
    }
}

/// Asks the step environment's node selector for a node meeting every requirement of the job
/// (capacity of its spec, the configured twin, nodes this job's deploys already failed on,
/// features) and records the choice in `ctx`. Also used by `deploy_vm` when a failed deploy
/// cleared the choice, so a retry never lands on the node that just failed.
pub(super) async fn choose(s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let nodes = s.env.nodes.clone()?;
    let need = ctx
        .spec
        .get_or_insert_with(VmSpec::default)
        .required_capacity();
    let req = Requirements {
        need,
        twin_id: s.env.cfg.grid.twin_id,
        excluded: ctx.excluded_nodes.clone(),
        features: FeatureNeeds { light_ok: false },
    };
    let selection = nodes.select(&s.env.cfg.grid.candidate_nodes, &req).await?;
    for (node, why) in &selection.rejected {
        s.say(format!("node {node} not chosen: {why}"));
    }
    ctx.node_id = Some(selection.node.node_id);
    ctx.node_domain = Some(selection.domain.clone());
    Ok(selection.reason)
}
