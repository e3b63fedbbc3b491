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
                for o in report.orphans.iter().filter(|o| &o.backend == kind) {
                    let Some(name) = hero_os_tfgrid_deployer_backends::ResourceName::parse(&o.name)
                    else {
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
            }
        }
        Ok(report)
    }
}
