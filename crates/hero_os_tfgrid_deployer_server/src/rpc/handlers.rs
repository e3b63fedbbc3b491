//! Binds every SDK method to the core. Thin on purpose: parse, check the caller, call the core.

use hero_os_tfgrid_deployer_sdk::methods::*;
use hero_os_tfgrid_deployer_sdk::types::*;
use hero_secrets::validate_slot;

use super::Registry;
use crate::db::Cached;
use crate::error::ServiceError;
use crate::service::Deployer;

/// Facts for `deployer.server_info` that the core does not own.
#[derive(Clone)]
pub struct ServerFacts {
    pub forge_version: Option<String>,
    pub data_dir: String,
    pub started_at: i64,
    /// Service profiles a deploy or redeploy may name, and the one used when none is named.
    pub profiles: Vec<String>,
    pub default_profile: String,
}

pub fn register_all(registry: &mut Registry, deployer: Deployer, facts: ServerFacts) {
    let d = deployer;
    registry.register_with::<CreateUser, _, _>(d.clone(), |d, c, p| async move {
        let mut created = d.create_user(&c.actor, p).await?;
        // The password is held either way; over TCP it is not handed out: nothing there proves who
        // is calling (see `Method::LOCAL_ONLY`, which guards every method that only hands out secrets).
        if !c.local {
            created.initial_password = None;
        }
        Ok(created)
    });
    registry.register_with::<GetUser, _, _>(d.clone(), |d, _, p| async move {
        d.get_user(p.user_id).await
    });
    registry.register_with::<FindUser, _, _>(d.clone(), |d, _, p| async move {
        d.find_user(p.username).await
    });
    registry.register_with::<ListUsers, _, _>(
        d.clone(),
        |d, _, p| async move { d.list_users(p).await },
    );
    registry.register_with::<DeleteUser, _, _>(d.clone(), |d, c, p| async move {
        d.delete_user(&c.actor, p.user_id).await
    });
    registry.register_with::<RevealInitialPassword, _, _>(d.clone(), |d, c, p| async move {
        d.reveal_initial_password(&c.actor, p.user_id).await
    });
    registry.register_with::<ResetForgePassword, _, _>(d.clone(), |d, c, p| async move {
        d.reset_forge_password(&c.actor, p.user_id).await
    });
    registry.register_with::<ListEvents, _, _>(d.clone(), |d, _, p| async move {
        d.list_events(p).await
    });
    registry.register_with::<SecretSet, _, _>(d.clone(), |d, c, p| async move {
        validate_slot(&p.slot)?;
        if p.value.is_empty() {
            return Err(ServiceError::InvalidParams("secret value is empty".into()));
        }
        d.secrets.set(&p.slot, &p.value).await?;
        d.audit(
            &c.actor,
            "secret.set",
            &format!("secret:{}", p.slot),
            "ok",
            None,
        )
        .await?;
        Ok(Ack { ok: true })
    });
    registry.register_with::<SecretGet, _, _>(d.clone(), |d, c, p| async move {
        let value =
            d.secrets.get(&p.slot).await?.ok_or_else(|| {
                ServiceError::NotFound(format!("secret slot {} is empty", p.slot))
            })?;
        d.audit(
            &c.actor,
            "secret.get",
            &format!("secret:{}", p.slot),
            "ok",
            None,
        )
        .await?;
        Ok(SecretValue {
            slot: p.slot,
            value: value.expose().to_owned(),
        })
    });
    registry.register_with::<SecretList, _, _>(d.clone(), |d, _, p| async move {
        let slots = d.secrets.list(p.prefix.as_deref().unwrap_or("")).await?;
        Ok(SecretSlots { slots })
    });
    registry.register_with::<SecretDelete, _, _>(d.clone(), |d, c, p| async move {
        if !d.secrets.delete(&p.slot).await? {
            return Err(ServiceError::NotFound(format!(
                "secret slot {} is empty",
                p.slot
            )));
        }
        d.audit(
            &c.actor,
            "secret.delete",
            &format!("secret:{}", p.slot),
            "ok",
            None,
        )
        .await?;
        Ok(Ack { ok: true })
    });
    registry.register_with::<GetServerInfo, _, _>((d, facts), |(d, facts), _, _| async move {
        server_info(&d, &facts).await
    });
}

/// Longest wait for Forge's `/version` in `server_info`.
const FORGE_PROBE: std::time::Duration = std::time::Duration::from_secs(3);

/// `deployer.server_info`.
pub async fn server_info(d: &Deployer, facts: &ServerFacts) -> Result<ServerInfo, ServiceError> {
    let users =
        d.db.call(|conn| -> Result<i64, ServiceError> {
            Ok(conn.query_row_cached("SELECT count(*) FROM users", [], |r| r.get(0))?)
        })
        .await?;
    // Measured now, on every call: a version cached at start-up would report a Forge that has
    // gone down since as fine. Bounded, so a hanging Forge cannot stall `server status`.
    let (forge_version, forge_error) =
        match tokio::time::timeout(FORGE_PROBE, d.forge.version()).await {
            Ok(Ok(v)) => (Some(v), None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (
                None,
                Some(format!(
                    "Forge at {} did not answer within {} s",
                    d.forge.url(),
                    FORGE_PROBE.as_secs()
                )),
            ),
        };
    Ok(ServerInfo {
        service: crate::config::SERVICE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        forge_url: d.forge.url().to_owned(),
        forge_reachable: Some(forge_version.is_some()),
        forge_error,
        forge_version,
        data_dir: facts.data_dir.clone(),
        secret_store: d.secrets.kind().into(),
        started_at: facts.started_at,
        users: users as u64,
        profiles: facts.profiles.clone(),
        default_profile: Some(facts.default_profile.clone()),
    })
}
