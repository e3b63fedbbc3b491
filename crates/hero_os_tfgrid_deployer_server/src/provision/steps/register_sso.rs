//! `register_sso`: the VM's own confidential OAuth2 app on Forge, for `<public origin>/oauth/callback`,
//! once the public URL is known (after `deploy_gateway`). One app per VM, never one shared app:
//! the VM's owner has root on it and can read its client secret, so a shared secret would serve
//! every other VM's callback. Owned by the deployer's admin account (`docs/provisioning.md`, "Who
//! owns a VM's OAuth app"), named after the VM's resource name so the deployer can find it again
//! (`hero_os_tfgrid_deployer hero_u<id>_<name>`).
//!
//! Idempotent: the app recorded in the job, or the one of that name that this deployer made
//! ([`crate::provision::oauth_apps`]), is adopted; duplicates of the name (which only a bug could
//! make) are deleted down to the oldest. An app of the name that this deployer did not make is
//! another deployer's on the same Forge account and is never adopted. The client secret lives only
//! in the secret store (`deployer/users/<user_id>/oauth_client_secret`); Forge never shows it again,
//! so whenever the deployer cannot be sure the stored secret belongs to this app (none stored, or
//! the app is not the one this job recorded) it rotates the secret (`PATCH`) instead of making a
//! second app. The app id and client id (public) are recorded in the job's context (sqlite).

use std::time::Duration;

use async_trait::async_trait;

use super::{JobContext, Step, StepCx, StepError};
use crate::error::ServiceError;
use crate::forge::apps::{OAuthApp, OAuthAppSpec};

pub struct RegisterSso;

impl RegisterSso {
    pub const NAME: &'static str = "register_sso";
}

/// Prefix of every app name the deployer makes; the rest is the VM's resource name.
pub const APP_NAME_PREFIX: &str = "hero_os_tfgrid_deployer ";

/// The app name of the VM with resource name `resource`.
pub fn app_name(resource: &str) -> String {
    format!("{APP_NAME_PREFIX}{resource}")
}

/// `http://carol.localhost:8088/` → `http://carol.localhost:8088/oauth/callback`: the origin of
/// the public URL (scheme, host, port; no path, query or fragment), which is what hero_proxy on
/// the VM sends as its redirect URI.
pub fn callback_uri(public_url: &str) -> Result<String, StepError> {
    let bad = |why: &str| {
        StepError::fatal(
            "sso.bad_public_url",
            format!("the public URL {public_url:?} {why}; cannot register an OAuth callback"),
        )
    };
    let (scheme, rest) = public_url
        .split_once("://")
        .ok_or_else(|| bad("has no scheme"))?;
    if scheme != "https" && scheme != "http" {
        return Err(bad("is neither http nor https"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(bad("has no usable host"));
    }
    Ok(format!(
        "{scheme}://{}/oauth/callback",
        authority.to_ascii_lowercase()
    ))
}

fn db_step_error(e: ServiceError) -> StepError {
    StepError::transient("sso.db", format!("the record of OAuth apps: {e}"))
}

fn forge_step_error(e: crate::forge::ForgeError) -> StepError {
    StepError {
        code: e.code().to_owned(),
        transient: e.is_transient(),
        message: e.to_string(),
    }
}

#[async_trait]
impl Step for RegisterSso {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(120)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let users = &s.env.users;
        let apps = users.forge.apps().ok_or_else(|| {
            StepError::fatal(
                "sso.no_app_port",
                "this Forge client cannot manage OAuth apps; the VM would have no sign-in",
            )
        })?;
        let gw = ctx.gateway.clone().ok_or_else(|| {
            StepError::fatal(
                "sso.no_gateway",
                "no public URL recorded by deploy_gateway; retry the job",
            )
        })?;
        let resource = s.resource_name()?.to_string();
        let spec = OAuthAppSpec {
            name: app_name(&resource),
            redirect_uris: vec![callback_uri(&gw.url)?],
            confidential: true,
        };
        let slot = hero_secrets::slots::user_oauth_client_secret(s.job.user_id);
        let map_secret = |e: hero_secrets::SecretError| {
            StepError::transient("sso.secret_store", format!("secret store: {e}"))
        };

        // Find: the recorded app, else every app of this name that this deployer made (oldest
        // first; an app of the name that it did not make is another deployer's, never touched).
        let user_id = s.job.user_id;
        let ours = users.oauth_apps_of(user_id).await.map_err(db_step_error)?;
        let mut found: Vec<OAuthApp> = Vec::new();
        if let Some(id) = ctx.oauth_app_id.filter(|id| ours.contains(id)) {
            if let Some(app) = apps.get_oauth_app(id).await.map_err(forge_step_error)? {
                if app.name == spec.name {
                    found.push(app);
                }
            }
        }
        if found.is_empty() {
            found = apps
                .list_oauth_apps()
                .await
                .map_err(forge_step_error)?
                .into_iter()
                .filter(|a| a.name == spec.name && ours.contains(&a.id))
                .collect();
            found.sort_by_key(|a| a.id);
        }
        let mut notes = Vec::new();
        for extra in found.iter().skip(1) {
            apps.delete_oauth_app(extra.id)
                .await
                .map_err(forge_step_error)?;
            users
                .forget_oauth_apps(vec![extra.id])
                .await
                .map_err(db_step_error)?;
            notes.push(format!("deleted duplicate app {}", extra.id));
        }

        let (app, how) = match found.into_iter().next() {
            None => {
                let made = apps
                    .create_oauth_app(&spec)
                    .await
                    .map_err(forge_step_error)?;
                users
                    .record_oauth_app(made.app.id, user_id)
                    .await
                    .map_err(db_step_error)?;
                // Stored before the job records the app: a crash in between is repaired by a
                // rotation on the next run, never by a second app.
                users
                    .secrets
                    .set(&slot, made.secret.expose())
                    .await
                    .map_err(map_secret)?;
                (made.app, "created")
            }
            Some(app) => {
                let ours = ctx.oauth_app_id == Some(app.id)
                    && ctx.oauth_client_id.as_deref() == Some(app.client_id.as_str());
                let held = users
                    .secrets
                    .get(&slot)
                    .await
                    .map_err(map_secret)?
                    .is_some_and(|v| !v.expose().is_empty());
                let current = app.redirect_uris == spec.redirect_uris && app.confidential;
                if ours && held && current {
                    (app, "adopted")
                } else {
                    let rotated = apps
                        .rotate_oauth_app(app.id, &spec)
                        .await
                        .map_err(forge_step_error)?
                        .ok_or_else(|| {
                            StepError::transient(
                                "sso.app_vanished",
                                format!("OAuth app {} disappeared while being rotated", app.id),
                            )
                        })?;
                    users
                        .secrets
                        .set(&slot, rotated.secret.expose())
                        .await
                        .map_err(map_secret)?;
                    (rotated.app, "adopted, secret rotated")
                }
            }
        };
        ctx.oauth_app_id = Some(app.id);
        ctx.oauth_client_id = Some(app.client_id.clone());
        notes.insert(
            0,
            format!(
                "OAuth app {} {how} (client id {}) for {}",
                app.id, app.client_id, spec.redirect_uris[0]
            ),
        );
        Ok(notes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_is_the_public_origin() {
        let ok = [
            (
                "http://carol.localhost:8088/",
                "http://carol.localhost:8088/oauth/callback",
            ),
            (
                "http://carol.localhost:8088",
                "http://carol.localhost:8088/oauth/callback",
            ),
            (
                "https://carol.gent01.grid.tf/",
                "https://carol.gent01.grid.tf/oauth/callback",
            ),
            (
                "https://Carol.Gent01.grid.tf/x/y?z#w",
                "https://carol.gent01.grid.tf/oauth/callback",
            ),
        ];
        for (url, want) in ok {
            assert_eq!(callback_uri(url).unwrap(), want, "{url}");
        }
        for bad in [
            "carol.localhost",
            "ftp://carol.localhost/",
            "https:///x",
            "https://user@evil.example/",
            "https://a b/",
            "",
        ] {
            assert!(callback_uri(bad).is_err(), "{bad:?}");
        }
    }
}
