//! `select_node`: the grid node the VM goes on — pinned by the request, kept from an earlier
//! attempt, or chosen through the [`NodeSelector`](hero_os_tfgrid_deployer_backends::NodeSelector)
//! of the step's environment. A backend that places VMs on this machine has no node to choose.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::node_selection::{FeatureNeeds, Requirements, SelectError};
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
            return check_pinned(s, ctx, node).await;
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
    let req = requirements(s, ctx, ctx.excluded_nodes.clone());
    let selection = nodes.select(&s.env.cfg.grid.candidate_nodes, &req).await?;
    for (node, why) in &selection.rejected {
        s.say(format!("node {node} not chosen: {why}"));
    }
    ctx.node_id = Some(selection.node.node_id);
    ctx.node_domain = Some(selection.domain.clone());
    Ok(selection.reason)
}

/// What a node must offer this job's VM: its spec's capacity, the configured twin, features; `excluded` nodes never.
fn requirements(s: &StepCx<'_>, ctx: &mut JobContext, excluded: Vec<u32>) -> Requirements {
    Requirements {
        need: ctx
            .spec
            .get_or_insert_with(VmSpec::default)
            .required_capacity(),
        twin_id: s.env.cfg.grid.twin_id,
        excluded,
        features: FeatureNeeds { light_ok: false },
    }
}

/// A node pinned by the request is checked by the same rules as a chosen one (up, room for the VM, the twin,
/// features, a gateway domain). Why: a node id that does not exist or cannot take the VM failed minutes later
/// inside `tofu apply` with a grid error the operator had to decode. When gridproxy cannot be asked the pin is
/// kept as given, said in the step's output: pinning is also the operator's way past a gridproxy outage.
async fn check_pinned(
    s: &StepCx<'_>,
    ctx: &mut JobContext,
    node: u32,
) -> Result<String, StepError> {
    let nodes = match s.env.nodes.clone() {
        Ok(n) => n,
        Err(e) => {
            return Ok(format!(
                "node {node} pinned by the request; not checked ({}): deploying as pinned",
                e.message
            ))
        }
    };
    let req = requirements(s, ctx, Vec::new());
    match nodes.select(&[node], &req).await {
        Ok(selection) => {
            ctx.node_domain = Some(selection.domain.clone());
            Ok(format!(
                "node {node} ({}) pinned by the request; checked: it can take this VM",
                selection.domain
            ))
        }
        Err(SelectError::NoCandidate(why)) => Err(StepError::fatal(
            "select.pinned_unsuitable",
            format!("node {node} pinned by the request cannot take this VM: {why}; pin another node or none"),
        )),
        Err(SelectError::GridProxy(e)) => Ok(format!(
            "node {node} pinned by the request; not checked (gridproxy: {e}): deploying as pinned"
        )),
    }
}
