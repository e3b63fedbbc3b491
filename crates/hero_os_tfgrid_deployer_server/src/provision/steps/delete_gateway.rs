//! `delete_gateway`: the user's gateway is gone (already gone is success).

use std::time::Duration;

use async_trait::async_trait;

use super::{JobContext, Step, StepCx, StepError};
use crate::provision::facts::Fact;

pub struct DeleteGateway;

impl DeleteGateway {
    pub const NAME: &'static str = "delete_gateway";
}

#[async_trait]
impl Step for DeleteGateway {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn calls_backend(&self) -> bool {
        true
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let name = s.resource_name()?;
        if ctx.backend_untouched {
            s.record_now(Fact::GatewaysDeleted {
                user_id: s.job.user_id,
                now: s.now(),
            })
            .await?;
            return Ok(format!(
                "gateway {name} never reached the {} backend (no deploy was attempted); nothing to delete there",
                s.job.backend
            ));
        }
        let backend = s.backend()?;
        let existed = backend.get_gateway(&name).await?.is_some();
        backend.delete_gateway(&name, s.sink()).await?;
        s.record_now(Fact::GatewaysDeleted {
            user_id: s.job.user_id,
            now: s.now(),
        })
        .await?;
        Ok(if existed {
            format!("gateway of {name} deleted")
        } else {
            format!("gateway of {name} already gone")
        })
    }
}
