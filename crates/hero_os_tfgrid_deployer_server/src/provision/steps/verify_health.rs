//! `verify_health`: the VM's health path answers 200 through its public URL.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_sdk::jobs::EventLevel;

use super::{JobContext, Step, StepCx, StepError};

pub struct VerifyHealth;

impl VerifyHealth {
    pub const NAME: &'static str = "verify_health";
}

#[async_trait]
impl Step for VerifyHealth {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(300)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let name = s.resource_name()?;
        let gw = s.backend()?.get_gateway(&name).await?.ok_or_else(|| {
            StepError::fatal(
                "gateway.gone",
                format!("gateway of {name} no longer exists; decommission and provision again"),
            )
        })?;
        ctx.gateway = Some(gw.clone());
        let url = format!(
            "{}/{}",
            gw.url.trim_end_matches('/'),
            s.env.cfg.health_path.trim_start_matches('/')
        );
        let poll = s.poll();
        let mut n = 0u32;
        loop {
            n += 1;
            let last = match s
                .env
                .agent
                .http_status(&url, gw.connect_addr.as_deref())
                .await
            {
                Ok(200) => return Ok(format!("GET {url} answered 200 (attempt {n})")),
                Ok(code) => format!("HTTP {code}"),
                Err(e) => e.message,
            };
            s.line(
                EventLevel::Warn,
                Some(n),
                format!("{}: GET {url}: {last}", s.progress(n)),
            );
            if tokio::time::Instant::now() + poll >= s.deadline {
                return Err(StepError::fatal(
                    "health.failed",
                    format!(
                        "GET {url} did not answer 200 within the step deadline ({n} attempts); last: {last}"
                    ),
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }
}
