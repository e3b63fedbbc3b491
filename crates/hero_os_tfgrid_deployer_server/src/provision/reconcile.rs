//! `deployer.reconcile`: the backends' inventories against sqlite. An orphan is a resource the
//! deployer named (`hero_u<id>_…`) but has no live record of; a missing resource is a live record
//! whose resource is gone. Resources of users with an active job are skipped (the job is making or
//! removing them right now); resources not named by the deployer are never touched.

use std::collections::BTreeSet;

use hero_os_tfgrid_deployer_backends::compute::discard_output as discard;
use hero_os_tfgrid_deployer_backends::ResourceKind;
use hero_os_tfgrid_deployer_sdk::jobs::{
    ReconcileParams, ReconcileReport, ResourceRef, SkippedBackend,
};

use super::{vms, Provisioner};
use crate::audit::Actor;
use crate::error::ServiceError;

fn kind_str(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::Vm => "vm",
        ResourceKind::Gateway => "gateway",
    }
}

impl Provisioner {
    /// Just before `fix` removes an orphan. The findings come from a snapshot that may be minutes old (a grid
    /// inventory goes through `tofu`), and a deploy started since would own the resource by now (resource names
    /// are fixed per user). So, under the user's name claim — which `provision_vm` takes too, so no deploy of that
    /// user can start until the removal is over — the orphan is checked again: no active job of the user, no live
    /// record of that name. `None`: not an orphan any more, leave it; otherwise the claim to hold while removing
    /// (itself `None` when the user's record is gone: then no deploy of them can start at all).
    async fn claim_orphan(
        &self,
        o: &ResourceRef,
    ) -> Result<Option<Option<crate::db::Claim>>, ServiceError> {
        let Some(user_id) = o.user_id else {
            return Ok(Some(None));
        };
        let username: Option<String> = self
            .db()
            .call(move |conn| -> Result<_, ServiceError> {
                Ok(crate::users::user_by_id(conn, user_id)?.map(|u| u.forge_username))
            })
            .await?;
        let claim = match username {
            Some(name) => Some(self.deployer().claim_name(&name).await?),
            None => None,
        };
        let (kind, name) = (o.kind.clone(), o.name.clone());
        let still = self
            .db()
            .call(move |conn| -> Result<bool, ServiceError> {
                if super::store::active_job_of(conn, user_id)?.is_some() {
                    return Ok(false);
                }
                let known = match kind.as_str() {
                    "gateway" => vms::live_gateway_names(conn)?
                        .iter()
                        .any(|(g, _)| *g == name),
                    _ => vms::live_vm_names(conn)?.iter().any(|(v, _, _)| *v == name),
                };
                Ok(!known)
            })
            .await?;
        Ok(still.then_some(claim))
    }

    pub async fn reconcile(
        &self,
        actor: &Actor,
        p: ReconcileParams,
    ) -> Result<ReconcileReport, ServiceError> {
        let (live_vms, live_gws, busy) = self
            .db()
            .call(|conn| -> Result<_, ServiceError> {
                let busy: BTreeSet<i64> = conn
                    .prepare(
                        "SELECT user_id FROM jobs WHERE state IN ('queued','running','cancelling')",
                    )?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok((
                    vms::live_vm_names(conn)?,
                    vms::live_gateway_names(conn)?,
                    busy,
                ))
            })
            .await?;
        let mut report = ReconcileReport {
            orphans: Vec::new(),
            missing: Vec::new(),
            removed: Vec::new(),
            checked: Vec::new(),
            skipped: Vec::new(),
        };
        // Backends in use: the default one and any that holds a live VM record (a grid backend
        // nobody uses is not asked, so reconcile does not need its credentials).
        let in_use = |kind: &str| {
            kind == self.inner.cfg.backend || live_vms.iter().any(|(_, b, _)| b == kind)
        };
        for (kind, backend) in self.inner.backends.iter().filter(|(k, _)| in_use(k)) {
            // Per backend: one that is not configured (no mnemonic, no socket) or does not
            // answer is named in the report and skipped, so it never blocks the others.
            let inventory = match backend.prerequisites().await {
                Ok(()) => backend.inventory().await,
                Err(e) => Err(e),
            };
            let inventory = match inventory {
                Ok(inventory) => inventory,
                Err(e) => {
                    report.skipped.push(SkippedBackend {
                        backend: kind.clone(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            report.checked.push(kind.clone());
            let mut present: BTreeSet<(&'static str, String)> = BTreeSet::new();
            for r in &inventory {
                let Some(name) = &r.name else { continue };
                present.insert((kind_str(r.kind), name.to_string()));
                if busy.contains(&name.user_id()) {
                    continue;
                }
                let n = name.to_string();
                let known = match r.kind {
                    ResourceKind::Vm => live_vms.iter().any(|(vn, vb, _)| *vn == n && vb == kind),
                    ResourceKind::Gateway => live_gws.iter().any(|(gn, _)| *gn == n),
                };
                if !known {
                    report.orphans.push(ResourceRef {
                        kind: kind_str(r.kind).into(),
                        name: n,
                        user_id: Some(name.user_id()),
                        backend: kind.clone(),
                    });
                }
            }
            for (name, b, user_id) in &live_vms {
                if b == kind && !busy.contains(user_id) && !present.contains(&("vm", name.clone()))
                {
                    report.missing.push(ResourceRef {
                        kind: "vm".into(),
                        name: name.clone(),
                        user_id: Some(*user_id),
                        backend: kind.clone(),
                    });
                }
            }
            for (name, user_id) in &live_gws {
                let ours = live_vms.iter().any(|(vn, vb, _)| vn == name && vb == kind);
                if ours && !busy.contains(user_id) && !present.contains(&("gateway", name.clone()))
                {
                    report.missing.push(ResourceRef {
                        kind: "gateway".into(),
                        name: name.clone(),
                        user_id: Some(*user_id),
                        backend: kind.clone(),
                    });
                }
            }
            if p.fix {
                let mut owned_since = Vec::new();
                for o in report.orphans.iter().filter(|o| &o.backend == kind) {
                    let Some(name) = hero_os_tfgrid_deployer_backends::ResourceName::parse(&o.name)
                    else {
                        continue;
                    };
                    let Some(_claim) = self.claim_orphan(o).await? else {
                        owned_since.push(o.clone());
                        continue;
                    };
                    let r = match o.kind.as_str() {
                        "vm" => backend.delete_vm(&name, discard()).await,
                        _ => backend.delete_gateway(&name, discard()).await,
                    };
                    let subject = format!("{}:{}", o.kind, o.name);
                    match r {
                        Ok(()) => {
                            self.deployer()
                                .audit(
                                    actor,
                                    "reconcile.remove_orphan",
                                    &subject,
                                    "ok",
                                    Some(&format!("removed from backend {kind}")),
                                )
                                .await?;
                            report.removed.push(o.clone());
                        }
                        Err(e) => {
                            self.deployer()
                                .audit(
                                    actor,
                                    "reconcile.remove_orphan",
                                    &subject,
                                    &format!("error:{}", e.code()),
                                    Some(&e.to_string()),
                                )
                                .await?;
                        }
                    }
                }
                // What a deploy started since the snapshot owns now is no orphan: not reported as one.
                report.orphans.retain(|o| !owned_since.contains(o));
            }
        }
        self.reconcile_oauth_apps(actor, &p, &live_vms, &busy, &mut report)
            .await?;
        Ok(report)
    }

    /// The VMs' OAuth apps on Forge (`register_sso`): an app this deployer made (its id is in
    /// `oauth_apps`) without a live VM is an orphan (`fix` deletes it, and the user's stored
    /// client secret); a live VM without its app is missing (a retry of its provision, or a new
    /// one after decommission, makes it). Apps it did not make are never touched, whatever their
    /// name (another deployer on the same Forge account names its apps the same way); users with
    /// an active job are skipped.
    async fn reconcile_oauth_apps(
        &self,
        actor: &Actor,
        p: &ReconcileParams,
        live_vms: &[(String, String, i64)],
        busy: &BTreeSet<i64>,
        report: &mut ReconcileReport,
    ) -> Result<(), ServiceError> {
        use super::steps::register_sso::APP_NAME_PREFIX;
        let d = self.deployer();
        let Some(apps) = d.forge.apps() else {
            return Ok(());
        };
        // A Forge that cannot be asked must not hide the backends' findings: the apps part is
        // skipped with a warning in the server log (the next reconcile asks again).
        let listed = match apps.list_oauth_apps().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(code = e.code(), error = %e, "reconcile: cannot list the OAuth apps on Forge; skipping them");
                return Ok(());
            }
        };
        // Only apps this deployer made are its business: another deployer on the same Forge
        // account names its apps the same way (`super::oauth_apps`).
        let ours = d.all_oauth_apps().await?;
        let mut with_app: BTreeSet<String> = BTreeSet::new();
        for app in listed.iter().filter(|a| ours.contains_key(&a.id)) {
            let Some(resource) = app
                .name
                .strip_prefix(APP_NAME_PREFIX)
                .and_then(hero_os_tfgrid_deployer_backends::ResourceName::parse)
            else {
                continue;
            };
            let n = resource.to_string();
            with_app.insert(n.clone());
            if busy.contains(&resource.user_id()) || live_vms.iter().any(|(vn, _, _)| *vn == n) {
                continue;
            }
            let orphan = ResourceRef {
                kind: "oauth_app".into(),
                name: n.clone(),
                user_id: Some(resource.user_id()),
                backend: "forge".into(),
            };
            let claimed = if p.fix {
                match self.claim_orphan(&orphan).await? {
                    Some(claim) => Some(claim),
                    // Owned by a deploy started since the snapshot: no orphan.
                    None => continue,
                }
            } else {
                None
            };
            report.orphans.push(orphan.clone());
            if let Some(_claim) = claimed {
                let subject = format!("oauth_app:{} (id {})", n, app.id);
                match apps.delete_oauth_app(app.id).await {
                    Ok(_) => {
                        d.forget_oauth_apps(vec![app.id]).await?;
                        let _ = d
                            .secrets
                            .delete(&hero_secrets::slots::user_oauth_client_secret(
                                resource.user_id(),
                            ))
                            .await;
                        d.audit(
                            actor,
                            "reconcile.remove_orphan",
                            &subject,
                            "ok",
                            Some("removed from Forge"),
                        )
                        .await?;
                        report.removed.push(orphan);
                    }
                    Err(e) => {
                        d.audit(
                            actor,
                            "reconcile.remove_orphan",
                            &subject,
                            &format!("error:{}", e.code()),
                            Some(&e.to_string()),
                        )
                        .await?;
                    }
                }
            }
        }
        for (name, backend, user_id) in live_vms {
            if !busy.contains(user_id) && !with_app.contains(name) {
                report.missing.push(ResourceRef {
                    kind: "oauth_app".into(),
                    name: name.clone(),
                    user_id: Some(*user_id),
                    backend: format!("forge (VM on {backend})"),
                });
            }
        }
        Ok(())
    }
}
