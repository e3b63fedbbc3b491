//! Binds every SDK method to the core. Thin on purpose: parse, check the caller, call the core.

use hero_os_tfgrid_deployer_sdk::methods::*;
use hero_os_tfgrid_deployer_sdk::types::*;
use hero_secrets::validate_slot;

use super::{Caller, Registry};
use crate::error::ServiceError;
use crate::service::Deployer;

/// Facts for `deployer.server_info` that the core does not own.
#[derive(Clone)]
pub struct ServerFacts {
    pub forge_version: Option<String>,
    pub data_dir: String,
    pub started_at: i64,
}

/// Secrets travel only over the local socket: the TCP listener sits behind the SSO edge, and no
/// browser-reachable path may read or write them.
fn require_local(caller: &Caller, what: &str) -> Result<(), ServiceError> {
    if caller.local {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!(
            "{what} is only allowed over the local unix socket"
        )))
    }
}

pub fn register_all(registry: &mut Registry, deployer: Deployer, facts: ServerFacts) {
    let d = deployer.clone();
    registry.register::<CreateUser, _, _>(move |c, p| {
        let d = d.clone();
        async move { d.create_user(&c.actor, p).await }
    });
    let d = deployer.clone();
    registry.register::<GetUser, _, _>(move |_, p| {
        let d = d.clone();
        async move { d.get_user(p.user_id).await }
    });
    let d = deployer.clone();
    registry.register::<FindUser, _, _>(move |_, p| {
        let d = d.clone();
        async move { d.find_user(p.username).await }
    });
    let d = deployer.clone();
    registry.register::<ListUsers, _, _>(move |_, p| {
        let d = d.clone();
        async move { d.list_users(p).await }
    });
    let d = deployer.clone();
    registry.register::<DeleteUser, _, _>(move |c, p| {
        let d = d.clone();
        async move { d.delete_user(&c.actor, p.user_id).await }
    });
    let d = deployer.clone();
    registry.register::<RevealInitialPassword, _, _>(move |c, p| {
        let d = d.clone();
        async move { d.reveal_initial_password(&c.actor, p.user_id).await }
    });
    let d = deployer.clone();
    registry.register::<ListEvents, _, _>(move |_, p| {
        let d = d.clone();
        async move { d.list_events(p).await }
    });
    let d = deployer.clone();
    registry.register::<SecretSet, _, _>(move |c, p| {
        let d = d.clone();
        async move {
            require_local(&c, "secret_set")?;
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
        }
    });
    let d = deployer.clone();
    registry.register::<SecretGet, _, _>(move |c, p| {
        let d = d.clone();
        async move {
            require_local(&c, "secret_get")?;
            let value = d.secrets.get(&p.slot).await?.ok_or_else(|| {
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
        }
    });
    let d = deployer.clone();
    registry.register::<SecretList, _, _>(move |c, p| {
        let d = d.clone();
        async move {
            require_local(&c, "secret_list")?;
            let slots = d.secrets.list(p.prefix.as_deref().unwrap_or("")).await?;
            Ok(SecretSlots { slots })
        }
    });
    let d = deployer.clone();
    registry.register::<SecretDelete, _, _>(move |c, p| {
        let d = d.clone();
        async move {
            require_local(&c, "secret_delete")?;
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
        }
    });
    registry.register::<GetServerInfo, _, _>(move |_, _| {
        let d = deployer.clone();
        let facts = facts.clone();
        async move { server_info(&d, &facts).await }
    });
}

/// `deployer.server_info`.
pub async fn server_info(d: &Deployer, facts: &ServerFacts) -> Result<ServerInfo, ServiceError> {
    let users =
        d.db.call(|conn| -> Result<i64, ServiceError> {
            Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
        })
        .await?;
    Ok(ServerInfo {
        service: crate::config::SERVICE.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        forge_url: d.forge.url().to_owned(),
        forge_version: facts.forge_version.clone(),
        data_dir: facts.data_dir.clone(),
        secret_store: d.secrets.kind().into(),
        started_at: facts.started_at,
        users: users as u64,
    })
}
