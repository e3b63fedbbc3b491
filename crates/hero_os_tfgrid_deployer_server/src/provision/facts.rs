//! What steps record about the world they changed, as values: a step says *what* it learned or
//! made ([`Fact`]), the job recorder decides when it is written, and the SQL lives here, next to
//! the tables ([`vms`]). Steps hold no SQL.

use hero_os_tfgrid_deployer_sdk::types::{UserId, VmStatus};
use rusqlite::{params, Connection};

use super::states::VmState;
use super::{store, vms, DEPLOYER_VERSION};
use crate::audit::OwnedEntry;
use crate::db::Cached;
use crate::error::ServiceError;

/// One fact a step records. `now` fields are wall-clock seconds.
#[derive(Debug)]
pub enum Fact {
    /// `deploy_vm` is about to ask the backend for this VM: adopt the user's live row of that
    /// name and backend, or insert one (`deploying`). Returns the row id.
    VmPlanned {
        user_id: UserId,
        forge_username: String,
        backend: String,
        name: String,
        node_id: Option<u32>,
        spec_json: String,
        job_id: i64,
        ssh_key_fingerprint: String,
        now: i64,
    },
    /// The job, node and key of a VM row written with the job.
    VmDeployedBy {
        vm_id: i64,
        job_id: i64,
        node_id: Option<u32>,
        ssh_key_fingerprint: String,
        now: i64,
    },
    /// Addresses and ids of a VM as the backend reports them.
    VmAddresses {
        vm_id: i64,
        private_ip: Option<String>,
        mycelium_ip: Option<String>,
        backend_id: Option<String>,
        node_id: Option<u32>,
        now: i64,
    },
    /// The user's gateway and the VM's public URL.
    Gateway {
        user_id: UserId,
        vm_id: Option<i64>,
        name: String,
        fqdn: String,
        backend_url: String,
        node_id: Option<u32>,
        url: String,
        now: i64,
    },
    /// The VM's SSH host key, pinned on first contact.
    HostKey {
        vm_id: Option<i64>,
        fingerprint: String,
    },
    /// The VM is ready: its row, the user's status and the audit line, together.
    VmReady {
        vm_id: i64,
        user_id: UserId,
        url: String,
        host_key: Option<String>,
        ssh_key_fingerprint: Option<String>,
        spec_json: String,
        node_id: Option<u32>,
        now: i64,
        audit: OwnedEntry,
    },
    /// The user's gateway rows are gone. Returns how many were marked.
    GatewaysDeleted { user_id: UserId, now: i64 },
    /// A deploy of the job failed on its node: the job's saved context forgets the node choice
    /// and keeps `excluded` (every node excluded so far), so a `retry_job` after a failed
    /// `deploy_vm` selects another node too. (A step that then succeeds saves the whole context
    /// anyway.)
    NodeExcluded { job_id: i64, excluded: Vec<u32> },
    /// The user's gateway and VM were deleted: rows marked (kept for audit). Returns how many
    /// VM rows were marked.
    ResourcesRemoved {
        user_id: UserId,
        backend: String,
        now: i64,
    },
    /// A decommission finished on `backend`: rows marked, the user's status and the audit line, together.
    Decommissioned {
        user_id: UserId,
        backend: String,
        now: i64,
        audit: OwnedEntry,
    },
}

impl Fact {
    /// Writes the fact inside the caller's transaction.
    pub(crate) fn apply(self, conn: &Connection) -> Result<i64, ServiceError> {
        match self {
            Fact::VmPlanned {
                user_id,
                forge_username,
                backend,
                name,
                node_id,
                spec_json,
                job_id,
                ssh_key_fingerprint,
                now,
            } => {
                let live = vms::live_vm(conn, user_id)?;
                Ok(vms::record_planned(
                    conn,
                    live.as_ref(),
                    &vms::PlannedVm {
                        user_id,
                        forge_username: &forge_username,
                        backend: &backend,
                        name: &name,
                        node_id,
                        spec_json: &spec_json,
                        job_id: Some(job_id),
                        ssh_key_fingerprint: Some(&ssh_key_fingerprint),
                        now,
                    },
                )?)
            }
            Fact::VmDeployedBy {
                vm_id,
                job_id,
                node_id,
                ssh_key_fingerprint,
                now,
            } => {
                vms::set_job(conn, vm_id, job_id)?;
                Ok(conn.execute_cached(
                    "UPDATE vms SET node_id = COALESCE(?2, node_id), ssh_key_fingerprint = ?3, \
                     updated_at = ?4 WHERE vm_id = ?1",
                    params![vm_id, node_id, ssh_key_fingerprint, now],
                )? as i64)
            }
            Fact::VmAddresses {
                vm_id,
                private_ip,
                mycelium_ip,
                backend_id,
                node_id,
                now,
            } => Ok(conn.execute_cached(
                "UPDATE vms SET private_ip = ?2, mycelium_ip = ?3, backend_id = ?4, node_id = COALESCE(?5, node_id), \
                 updated_at = ?6 WHERE vm_id = ?1",
                params![vm_id, private_ip, mycelium_ip, backend_id, node_id, now],
            )? as i64),
            Fact::Gateway {
                user_id,
                vm_id,
                name,
                fqdn,
                backend_url,
                node_id,
                url,
                now,
            } => {
                vms::upsert_gateway(conn, user_id, vm_id, &name, &fqdn, &backend_url, node_id, now)?;
                if let Some(vm_id) = vm_id {
                    conn.execute_cached(
                        "UPDATE vms SET url = ?2, updated_at = ?3 WHERE vm_id = ?1",
                        params![vm_id, url, now],
                    )?;
                }
                Ok(0)
            }
            Fact::HostKey { vm_id, fingerprint } => Ok(conn.execute_cached(
                "UPDATE vms SET host_key_fingerprint = ?2 WHERE vm_id = ?1",
                params![vm_id, fingerprint],
            )? as i64),
            Fact::VmReady {
                vm_id,
                user_id,
                url,
                host_key,
                ssh_key_fingerprint,
                spec_json,
                node_id,
                now,
                audit,
            } => {
                conn.execute_cached(
                    "UPDATE vms SET state = ?9, url = ?2, host_key_fingerprint = COALESCE(?3, host_key_fingerprint), \
                     ssh_key_fingerprint = COALESCE(?4, ssh_key_fingerprint), spec_json = ?5, node_id = COALESCE(?6, node_id), \
                     ready_at = COALESCE(ready_at, ?7), updated_at = ?7, deployer_version = ?8 WHERE vm_id = ?1",
                    params![
                        vm_id,
                        url,
                        host_key,
                        ssh_key_fingerprint,
                        spec_json,
                        node_id,
                        now,
                        DEPLOYER_VERSION,
                        VmState::Ready
                    ],
                )?;
                store::set_user_vm_status(conn, user_id, VmStatus::Ready, now)?;
                audit.append(conn, now)?;
                Ok(0)
            }
            Fact::NodeExcluded { job_id, excluded } => {
                let internals = store::internals(conn, job_id)?;
                let mut ctx: super::steps::JobContext =
                    serde_json::from_str(&internals.context_json).unwrap_or_default();
                ctx.node_id = None;
                ctx.node_domain = None;
                ctx.excluded_nodes = excluded;
                let json = serde_json::to_string(&ctx)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                conn.execute_cached(
                    "UPDATE jobs SET context_json = ?2 WHERE job_id = ?1",
                    params![job_id, json],
                )?;
                Ok(0)
            }
            Fact::GatewaysDeleted { user_id, now } => {
                Ok(vms::mark_gateways_deleted(conn, user_id, now)? as i64)
            }
            Fact::ResourcesRemoved {
                user_id,
                backend,
                now,
            } => {
                let n = vms::mark_vms_decommissioned(conn, user_id, &backend, now)?;
                vms::mark_gateways_deleted(conn, user_id, now)?;
                Ok(n as i64)
            }
            Fact::Decommissioned {
                user_id,
                backend,
                now,
                audit,
            } => {
                let n = vms::mark_vms_decommissioned(conn, user_id, &backend, now)?;
                vms::mark_gateways_deleted(conn, user_id, now)?;
                // A record left on another backend (an earlier attempt there) is still the user's live VM: the
                // status says failed, and the next decommission goes to that backend.
                let left = vms::live_vm(conn, user_id)?;
                let status = if left.is_some() {
                    VmStatus::Failed
                } else {
                    VmStatus::Decommissioned
                };
                store::set_user_vm_status(conn, user_id, status, now)?;
                let audit = OwnedEntry {
                    detail: audit.detail.map(|d| {
                        let d = d.replace("{n}", &n.to_string());
                        match &left {
                            Some(vm) => format!(
                                "{d}; the record of VM {} on the {} backend remains: decommission again to remove it",
                                vm.name, vm.backend
                            ),
                            None => d,
                        }
                    }),
                    ..audit
                };
                audit.append(conn, now)?;
                Ok(n as i64)
            }
        }
    }
}
