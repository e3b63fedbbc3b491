//! `deployer.forget_vm`: drop a user's VM and gateway records whose resources are gone, so the
//! user is no longer held by a record nothing can decommission (issue 16). Without `force` the
//! backend must confirm that every VM and gateway is gone (`get_vm`/`get_gateway` answer
//! `None`, and `remains` lists nothing left of them), or the record must provably never have reached it ([`vms::may_exist_on_backend`]).
//! With `force` the backend is not asked (it may be unconfigured). Never while a job is active
//! for the user. The rows go, the user stays, and one audit line (in the same write) says who,
//! forced or not, and what was forgotten; the VM's OAuth app and client secret then go too.
//! Whatever a forced forget leaves on a backend is named by the deployer (`hero_u<id>_…`), and
//! an OAuth app left on Forge stays recorded in `oauth_apps`, so `reconcile` reports either as
//! an orphan and `reconcile --fix` removes it.

use std::collections::BTreeSet;

use hero_os_tfgrid_deployer_backends::ResourceName;
use hero_os_tfgrid_deployer_sdk::jobs::{ForgetVmParams, ForgetVmResult, VmRecord};
use hero_os_tfgrid_deployer_sdk::types::{UserId, VmStatus};
use rusqlite::{params, Connection};

use super::{store, vms, Provisioner};
use crate::audit::Actor;
use crate::db::Cached;
use crate::error::ServiceError;

/// Why a forget was refused; each with a stable code in `data.detail.code`.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The backend says a VM or gateway of the record still exists.
    #[error("not forgetting the VM records of {user}: still on the backend: {}; decommission it first (`vm delete {user}`)", .what.join(", "))]
    StillExists { user: String, what: Vec<String> },
    /// The backend cannot be asked (unconfigured, unreachable, unknown) about a record that
    /// reached it.
    #[error("not forgetting the VM records of {user}: the {backend} backend cannot confirm that {name} is gone ({reason}); if it is gone, forget the record with --force")]
    Unconfirmed {
        user: String,
        backend: String,
        name: String,
        reason: String,
    },
}

impl Refusal {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::StillExists { .. } => "vm.still_exists",
            Refusal::Unconfirmed { .. } => "vm.unconfirmed",
        }
    }

    /// `data.detail` of the RPC error.
    pub fn detail(&self) -> serde_json::Value {
        match self {
            Refusal::StillExists { what, .. } => {
                serde_json::json!({ "code": self.code(), "still_exists": what })
            }
            Refusal::Unconfirmed {
                backend,
                name,
                reason,
                ..
            } => serde_json::json!({
                "code": self.code(), "backend": backend, "name": name, "reason": reason
            }),
        }
    }
}

/// What the user has that a forget would remove, read in one go.
struct Held {
    username: String,
    vms: Vec<VmRecord>,
    /// Active gateway rows: `(gateway_id, name)`.
    gateways: Vec<(i64, String)>,
    /// Per VM row: whether the backend may have been reached.
    reached: Vec<bool>,
    status: VmStatus,
}

fn held(conn: &Connection, user_id: UserId) -> Result<Held, ServiceError> {
    let username = crate::users::user_by_id(conn, user_id)?
        .ok_or_else(|| ServiceError::NotFound(format!("no user with user_id {user_id}")))?
        .forge_username;
    let vms = vms::live_vms_of(conn, user_id)?;
    let reached = vms
        .iter()
        .map(|vm| vms::may_exist_on_backend(conn, vm))
        .collect::<rusqlite::Result<Vec<bool>>>()?;
    let gateways = conn
        .prepare_cached(
            "SELECT gateway_id, name FROM gateway_mappings WHERE user_id = ?1 AND state = 'active' ORDER BY gateway_id",
        )?
        .query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(i64, String)>>>()?;
    let status: VmStatus = conn.query_row_cached(
        "SELECT vm_status FROM users WHERE user_id = ?1",
        [user_id],
        |r| r.get(0),
    )?;
    Ok(Held {
        username,
        vms,
        gateways,
        reached,
        status,
    })
}

/// The refusal while a job is active: it names the job.
fn job_active(conn: &Connection, user_id: UserId, username: &str) -> Option<ServiceError> {
    match store::active_job_of(conn, user_id) {
        Ok(Some((job_id, kind, state))) => Some(ServiceError::JobConflict {
            message: format!(
                "not forgetting the VM records of {username}: job {job_id} ({}, {}) is active for them and may be making or removing them; follow it with `job follow {job_id}` or cancel it first",
                kind.as_str(),
                state.as_str()
            ),
            detail: serde_json::json!({ "job_id": job_id, "kind": kind, "state": state }),
        }),
        Ok(None) => None,
        Err(e) => Some(e.into()),
    }
}

impl Provisioner {
    /// `deployer.forget_vm`.
    pub async fn forget_vm(
        &self,
        actor: &Actor,
        p: ForgetVmParams,
    ) -> Result<ForgetVmResult, ServiceError> {
        let user_id = p.user_id;
        let first = self
            .db()
            .call(
                move |conn| -> Result<(Held, Option<ServiceError>), ServiceError> {
                    let h = held(conn, user_id)?;
                    let busy = job_active(conn, user_id, &h.username);
                    Ok((h, busy))
                },
            )
            .await?;
        let (h, busy) = first;
        let subject = format!("user:{}", h.username);
        let subject_r = subject.as_str();
        let refuse = |e: ServiceError| async move {
            let detail = e.to_string();
            self.deployer()
                .audit(
                    actor,
                    "vm.forget",
                    subject_r,
                    &crate::users::error_outcome(&e),
                    Some(&format!("forced: {}; {detail}", yes_no(p.force))),
                )
                .await?;
            Err::<ForgetVmResult, ServiceError>(e)
        };
        if let Some(e) = busy {
            return refuse(e).await;
        }
        let grounds = match self.grounds(&h, p.force).await {
            Ok(g) => g,
            Err(e) => return refuse(e).await,
        };
        let vm_ids: BTreeSet<i64> = h.vms.iter().map(|v| v.vm_id).collect();
        let gw_ids: BTreeSet<i64> = h.gateways.iter().map(|g| g.0).collect();
        let vm_names: Vec<String> = h
            .vms
            .iter()
            .map(|v| format!("{} on {}", v.name, v.backend))
            .collect();
        let gw_names: Vec<String> = h.gateways.iter().map(|g| g.1.clone()).collect();
        let nothing = h.vms.is_empty() && h.gateways.is_empty();
        let detail = format!(
            "forced: {}; forgotten: {}; grounds: {}",
            yes_no(p.force),
            if nothing {
                format!(
                    "nothing (no VM or gateway record left; status {})",
                    h.status.as_str()
                )
            } else {
                let mut all: Vec<String> = vm_names.iter().map(|n| format!("vm {n}")).collect();
                all.extend(gw_names.iter().map(|n| format!("gateway {n}")));
                all.join(", ")
            },
            if grounds.is_empty() {
                "none needed".to_owned()
            } else {
                grounds.join("; ")
            }
        );
        let now_s = self.deployer().clock.now();
        let actor_w = actor.clone();
        let subject_w = subject.clone();
        let username = h.username.clone();
        // One write: the records are re-read, so a job that started or a row that appeared
        // while the backend was asked refuses instead of being forgotten unchecked.
        let outcome = self
            .db()
            .write(move |conn| -> Result<Result<(), ServiceError>, ServiceError> {
                if let Some(e) = job_active(conn, user_id, &username) {
                    return Ok(Err(e));
                }
                let now = held(conn, user_id)?;
                let now_vms: BTreeSet<i64> = now.vms.iter().map(|v| v.vm_id).collect();
                let now_gws: BTreeSet<i64> = now.gateways.iter().map(|g| g.0).collect();
                if now_vms != vm_ids || now_gws != gw_ids {
                    return Ok(Err(ServiceError::FailedPrecondition(format!(
                        "the VM records of {username} changed while the backend was asked; nothing was forgotten, try again"
                    ))));
                }
                for vm_id in &vm_ids {
                    conn.execute_cached("DELETE FROM vms WHERE vm_id = ?1", [vm_id])?;
                }
                for gw_id in &gw_ids {
                    conn.execute_cached(
                        "DELETE FROM gateway_mappings WHERE gateway_id = ?1",
                        [gw_id],
                    )?;
                }
                // The user is left with no VM: `user delete` and a new `vm deploy` both work. A
                // status that already says so (`no_vm`, `decommissioned`) is kept.
                if !matches!(now.status, VmStatus::NoVm | VmStatus::Decommissioned) {
                    conn.execute_cached(
                        "UPDATE users SET vm_status = ?2, updated_at = ?3 WHERE user_id = ?1",
                        params![user_id, VmStatus::NoVm, now_s],
                    )?;
                }
                crate::audit::append(
                    conn,
                    now_s,
                    crate::audit::Entry {
                        actor: &actor_w,
                        action: "vm.forget",
                        subject: &subject_w,
                        outcome: "ok",
                        detail: Some(&detail),
                    },
                )?;
                Ok(Ok(()))
            })
            .await?;
        if let Err(e) = outcome {
            return refuse(e).await;
        }
        let sso_app = self.forget_sso_apps(actor, user_id, &h, &subject).await?;
        Ok(ForgetVmResult {
            user_id,
            forge_username: h.username,
            forced: p.force,
            vms: vm_names,
            gateways: gw_names,
            grounds,
            sso_app,
        })
    }

    /// Why each VM and gateway record may go: the backend's answer, "never reached", or
    /// `force`. The refusal when one may not.
    async fn grounds(&self, h: &Held, force: bool) -> Result<Vec<String>, ServiceError> {
        let mut grounds = Vec::new();
        if force {
            if !h.vms.is_empty() || !h.gateways.is_empty() {
                grounds.push("--force: the backend was not asked".to_owned());
            }
            return Ok(grounds);
        }
        let mut still = Vec::new();
        // Gateways are asked of the backend of the VM record of the same name, else of the
        // default backend.
        let mut gateways: Vec<(String, String)> = h
            .gateways
            .iter()
            .map(|(_, name)| {
                let backend = h
                    .vms
                    .iter()
                    .find(|v| &v.name == name)
                    .map_or_else(|| self.default_backend().to_owned(), |v| v.backend.clone());
                (name.clone(), backend)
            })
            .collect();
        for (vm, reached) in h.vms.iter().zip(&h.reached) {
            if !reached {
                grounds.push(format!(
                    "{}: never reached the {} backend",
                    vm.name, vm.backend
                ));
                continue;
            }
            let unconfirmed = |reason: String| {
                ServiceError::Refused(Refusal::Unconfirmed {
                    user: h.username.clone(),
                    backend: vm.backend.clone(),
                    name: vm.name.clone(),
                    reason,
                })
            };
            let Some(name) = ResourceName::parse(&vm.name) else {
                return Err(unconfirmed("not a resource name of this deployer".into()));
            };
            let backend = self
                .backend(&vm.backend)
                .map_err(|e| unconfirmed(e.to_string()))?;
            backend
                .prerequisites()
                .await
                .map_err(|e| unconfirmed(e.to_string()))?;
            let found = still.len();
            match backend.get_vm(&name).await {
                Ok(Some(_)) => still.push(format!("vm {} on {}", vm.name, vm.backend)),
                Ok(None) => {}
                Err(e) => return Err(unconfirmed(e.to_string())),
            }
            // The gateway of the same name is asked of this backend even without a row: a
            // gateway the row lost track of would otherwise be left behind unnoticed.
            gateways.retain(|(g, _)| g != &vm.name);
            match backend.get_gateway(&name).await {
                Ok(Some(_)) => still.push(format!("gateway {} on {}", vm.name, vm.backend)),
                Ok(None) => {}
                Err(e) => return Err(unconfirmed(e.to_string())),
            }
            // Neither a VM nor a gateway, yet something of it may run on (a network a failed
            // deploy created): `vm delete` removes that, a forget would leave it to nobody.
            if still.len() == found {
                match backend.remains(&name).await {
                    Ok(parts) => still.extend(
                        parts
                            .into_iter()
                            .map(|p| format!("{p} of {} on {}", vm.name, vm.backend)),
                    ),
                    Err(e) => return Err(unconfirmed(e.to_string())),
                }
            }
            grounds.push(format!(
                "{}: the {} backend has no VM and no gateway of that name",
                vm.name, vm.backend
            ));
        }
        for (gw, kind) in gateways {
            let unconfirmed = |reason: String| {
                ServiceError::Refused(Refusal::Unconfirmed {
                    user: h.username.clone(),
                    backend: kind.clone(),
                    name: gw.clone(),
                    reason,
                })
            };
            let Some(name) = ResourceName::parse(&gw) else {
                return Err(unconfirmed("not a resource name of this deployer".into()));
            };
            let backend = self
                .backend(&kind)
                .map_err(|e| unconfirmed(e.to_string()))?;
            backend
                .prerequisites()
                .await
                .map_err(|e| unconfirmed(e.to_string()))?;
            match backend.get_gateway(&name).await {
                Ok(Some(_)) => still.push(format!("gateway {gw} on {kind}")),
                Ok(None) => grounds.push(format!("gateway {gw}: the {kind} backend has none")),
                Err(e) => return Err(unconfirmed(e.to_string())),
            }
        }
        if !still.is_empty() {
            return Err(ServiceError::Refused(Refusal::StillExists {
                user: h.username.clone(),
                what: still,
            }));
        }
        Ok(grounds)
    }

    /// After the records are gone: the VMs' OAuth apps on Forge and the client secret
    /// (`delete_sso_app`'s helper; already gone is fine). A failure does not undo the forget:
    /// the app is then an orphan `reconcile --fix` removes, and the answer says so. Audited.
    async fn forget_sso_apps(
        &self,
        actor: &Actor,
        user_id: UserId,
        h: &Held,
        subject: &str,
    ) -> Result<String, ServiceError> {
        let names: BTreeSet<&str> = h
            .vms
            .iter()
            .map(|v| v.name.as_str())
            .chain(h.gateways.iter().map(|g| g.1.as_str()))
            .collect();
        if names.is_empty() {
            return Ok("no VM record, so no OAuth app to delete".to_owned());
        }
        let mut said = Vec::new();
        let mut ok = true;
        for name in names {
            match super::steps::delete_sso_app::delete_vm_app(self.deployer(), user_id, name).await
            {
                Ok(s) => said.push(format!("{name}: {s}")),
                Err(e) => {
                    ok = false;
                    said.push(format!(
                        "{name}: OAuth app not deleted ({}: {}); `reconcile --fix` removes it",
                        e.code, e.message
                    ));
                }
            }
        }
        let text = said.join("; ");
        self.deployer()
            .audit(
                actor,
                "vm.forget_sso_app",
                subject,
                if ok { "ok" } else { "error:sso" },
                Some(&text),
            )
            .await?;
        Ok(text)
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
