//! `ssh_key`: the user's ED25519 key pair exists; its private half is sealed at rest.

use std::time::Duration;

use async_trait::async_trait;

use super::{JobContext, Step, StepCx, StepError};

pub struct SshKey;

impl SshKey {
    pub const NAME: &'static str = "ssh_key";
}

#[async_trait]
impl Step for SshKey {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        if let (Some(_), Some(fingerprint)) = (&ctx.public_key, &ctx.key_fingerprint) {
            return Ok(format!(
                "existing ED25519 key {fingerprint} adopted (found when the job was created)"
            ));
        }
        let comment = format!("hero_u{}@hero_os_tfgrid_deployer", s.job.user_id);
        let (facts, created) = s.keys.ensure(s.job.user_id, &comment).await?;
        ctx.key_fingerprint = Some(facts.fingerprint.clone());
        ctx.public_key = Some(facts.public_key.clone());
        Ok(if created {
            format!(
                "ED25519 key {} generated; private key sealed at rest",
                facts.fingerprint
            )
        } else {
            format!("existing ED25519 key {} adopted", facts.fingerprint)
        })
    }
}
