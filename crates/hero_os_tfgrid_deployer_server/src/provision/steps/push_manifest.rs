//! `push_manifest`: the VM holds the `services.toml` of the job's profile.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::manifest::ManifestUser;

use super::deploy_vm::access_parts;
use super::{JobContext, Step, StepCx, StepError};
use crate::provision::agent::SshAccess;

pub struct PushManifest;

impl PushManifest {
    pub const NAME: &'static str = "push_manifest";
}

#[async_trait]
impl Step for PushManifest {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(120)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let cfg = &s.env.cfg;
        let profile = s
            .options
            .profile
            .clone()
            .unwrap_or_else(|| cfg.default_profile.clone());
        let services = cfg.profile(&profile).ok_or_else(|| {
            StepError::fatal("manifest.profile", format!("unknown profile {profile:?}"))
        })?;
        let user = ManifestUser {
            username: s.job.forge_username.clone(),
            url: ctx
                .gateway
                .as_ref()
                .map(|g| g.url.clone())
                .unwrap_or_default(),
        };
        let text = cfg
            .manifest_profiles()
            .render(&profile, &user)
            .map_err(|e| StepError::fatal(e.code(), e.to_string()))?;
        let (vm, key) = access_parts(s, ctx).await?;
        let access = SshAccess {
            target: &vm.ssh,
            private_key: key,
            pinned: ctx.host_key.clone(),
        };
        s.env
            .agent
            .upload(&access, &vm.manifest_path, text.as_bytes(), Some(0o644))
            .await?;
        Ok(format!(
            "services.toml (profile {profile}: {}) uploaded to {}",
            services.join(", "),
            vm.manifest_path
        ))
    }
}
