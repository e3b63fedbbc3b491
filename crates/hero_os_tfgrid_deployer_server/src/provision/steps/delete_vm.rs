//! `delete_vm`: the user's VM is gone from the backend (already gone is success).

use std::time::Duration;

use async_trait::async_trait;

use super::{JobContext, Step, StepCx, StepError};

pub struct DeleteVm;

impl DeleteVm {
    pub const NAME: &'static str = "delete_vm";
}

#[async_trait]
impl Step for DeleteVm {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(600)
    }

    fn calls_backend(&self) -> bool {
        true
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let name = s.resource_name()?;
        if ctx.backend_untouched {
            return Ok(format!(
                "VM {name} never reached the {} backend (no deploy was attempted); nothing to delete there",
                s.job.backend
            ));
        }
        let backend = s.backend()?;
        let existed = backend
            .inventory()
            .await?
            .iter()
            .any(|r| r.name.as_ref() == Some(&name));
        backend.delete_vm(&name, s.sink()).await?;
        Ok(if existed {
            format!("VM {name} deleted")
        } else {
            format!("VM {name} already gone")
        })
    }
}
