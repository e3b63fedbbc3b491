//! VM and gateway records. A provision job's VM row is written with the job itself, so before
//! the backend is ever asked to deploy: every resource the deployer may have made has a row
//! (reconcile relies on it); rows are not deleted, only marked `decommissioned`, for audit — except
//! by `vm forget` (`forget.rs`), which removes the live rows of resources that are gone, with an
//! audit line saying what it removed.

use hero_os_tfgrid_deployer_sdk::jobs::{VmDetails, VmList, VmRecord};
use hero_os_tfgrid_deployer_sdk::types::UserId;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::states::VmState;
use super::Provisioner;
use crate::db::Cached;
use crate::error::ServiceError;

const VM_COLUMNS: &str = "vm_id, user_id, forge_username, backend, name, node_id, state, spec_json, private_ip, \
    mycelium_ip, url, host_key_fingerprint, deployer_version, created_at, updated_at, decommissioned_at, \
    ssh_key_fingerprint, backend_id, job_id, ready_at, health_state, health_since, health_checked_at, \
    last_healthy_at, health_error, expires_at, profile";

fn vm_from_row(r: &Row<'_>) -> rusqlite::Result<VmRecord> {
    let spec: String = r.get(7)?;
    Ok(VmRecord {
        vm_id: r.get(0)?,
        user_id: r.get(1)?,
        forge_username: r.get(2)?,
        backend: r.get(3)?,
        name: r.get(4)?,
        node_id: r.get(5)?,
        state: r.get::<_, VmState>(6)?.as_str().to_owned(),
        spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
        private_ip: r.get(8)?,
        mycelium_ip: r.get(9)?,
        url: r.get(10)?,
        host_key_fingerprint: r.get(11)?,
        deployer_version: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        decommissioned_at: r.get(15)?,
        ssh_key_fingerprint: r.get(16)?,
        backend_id: r.get(17)?,
        job_id: r.get(18)?,
        ready_at: r.get(19)?,
        health: crate::fleet::health::health_from_row(r, 20)?,
        expires_at: r.get(25)?,
        profile: r.get(26)?,
    })
}

/// The user's live (not decommissioned) VM row, newest first.
pub fn live_vm(conn: &Connection, user_id: UserId) -> rusqlite::Result<Option<VmRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {VM_COLUMNS} FROM vms WHERE user_id = ?1 AND state != 'decommissioned' ORDER BY vm_id DESC LIMIT 1"
    ))?
    .query_row([user_id], vm_from_row)
    .optional()
}

/// Whether the user's VM is ready, was warned, and its expiry has passed at `now`: the expiry sweep's condition, checked again
/// inside the write that starts the decommission (`Provisioner::decommission_expired`), because the sweep reads the
/// expired VMs first and an operator's `vm extend` (or `--never`) may land in between.
pub fn still_expired(conn: &Connection, user_id: UserId, now: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM vms WHERE user_id = ?1 AND state = 'ready' \
         AND expires_at IS NOT NULL AND expires_at <= ?2 AND expiry_warned_at IS NOT NULL)",
        rusqlite::params![user_id, now],
        |r| r.get(0),
    )
}

/// Every live (not decommissioned) VM row of the user, newest first.
pub fn live_vms_of(conn: &Connection, user_id: UserId) -> rusqlite::Result<Vec<VmRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {VM_COLUMNS} FROM vms WHERE user_id = ?1 AND state != 'decommissioned' ORDER BY vm_id DESC"
    ))?
    .query_map([user_id], vm_from_row)?
    .collect()
}

pub fn vm_by_id(conn: &Connection, vm_id: i64) -> rusqlite::Result<Option<VmRecord>> {
    conn.prepare_cached(&format!("SELECT {VM_COLUMNS} FROM vms WHERE vm_id = ?1"))?
        .query_row([vm_id], vm_from_row)
        .optional()
}

/// Every VM row of the user but the live one ([`live_vm`]), newest first: decommissioned VMs,
/// and rows of failed attempts a later attempt did not adopt (another backend), so none is
/// hidden.
pub fn history(conn: &Connection, user_id: UserId) -> rusqlite::Result<Vec<VmRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {VM_COLUMNS} FROM vms WHERE user_id = ?1 AND vm_id != COALESCE(\
         (SELECT vm_id FROM vms WHERE user_id = ?1 AND state != 'decommissioned' ORDER BY vm_id DESC LIMIT 1), -1) \
         ORDER BY vm_id DESC"
    ))?
    .query_map([user_id], vm_from_row)?
    .collect()
}

/// Live VM rows of every user: `(name, backend, user_id)`.
pub fn live_vm_names(conn: &Connection) -> rusqlite::Result<Vec<(String, String, UserId)>> {
    conn.prepare_cached("SELECT name, backend, user_id FROM vms WHERE state != 'decommissioned'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// Every live VM, in username order; `filter`: a username prefix.
pub fn live_vms(conn: &Connection, filter: Option<&str>) -> rusqlite::Result<Vec<VmRecord>> {
    // The user's live row is their newest that is not decommissioned (as in [`live_vm`]). The prefix is a range
    // on the name, as `list_users` reads it, not a LIKE pattern: nothing in it is a wildcard, and any length is a
    // plain comparison (a LIKE pattern of 50,000 characters is "too complex" for sqlite).
    let (from, to) = match filter {
        Some(f) => (Some(f.to_owned()), Some(crate::users::prefix_end(f))),
        None => (None, None),
    };
    conn.prepare_cached(&format!(
        "SELECT {VM_COLUMNS} FROM vms WHERE vm_id IN (SELECT MAX(vm_id) FROM vms \
         WHERE state != 'decommissioned' GROUP BY user_id) \
         AND (?1 IS NULL OR (forge_username >= ?1 AND forge_username < ?2)) ORDER BY forge_username"
    ))?
    .query_map(rusqlite::params![from, to], vm_from_row)?
    .collect()
}

/// The VM a provision job is about to make, as recorded before anything acts.
pub struct PlannedVm<'a> {
    pub user_id: UserId,
    pub forge_username: &'a str,
    pub backend: &'a str,
    pub name: &'a str,
    pub node_id: Option<u32>,
    pub spec_json: &'a str,
    pub job_id: Option<i64>,
    pub ssh_key_fingerprint: Option<&'a str>,
    pub now: i64,
}

/// Records the VM `v` names as being deployed: adopts `live`, the user's live row as the caller
/// read it ([`live_vm`]), when it has that name and backend (an earlier attempt's), else inserts
/// one. Returns its id.
pub fn record_planned(
    conn: &Connection,
    live: Option<&VmRecord>,
    v: &PlannedVm<'_>,
) -> rusqlite::Result<i64> {
    if let Some(vm) = live {
        if vm.name == v.name && vm.backend == v.backend {
            // A row a failed decommission left `decommissioning` is being deployed again now: it says so. Left
            // as it was, a failure of this deploy (which marks only `deploying` rows failed) kept it
            // `decommissioning` for good, and `extend_vm` refused it.
            if let Some(job_id) = v.job_id {
                set_job(conn, vm.vm_id, job_id)?;
            }
            conn.execute_cached(
                "UPDATE vms SET node_id = COALESCE(?2, node_id), updated_at = ?3, \
                 state = CASE WHEN state = 'decommissioning' THEN 'deploying' ELSE state END \
                 WHERE vm_id = ?1",
                params![vm.vm_id, v.node_id, v.now],
            )?;
            return Ok(vm.vm_id);
        }
    }
    conn.execute_cached(
        "INSERT INTO vms(user_id, forge_username, backend, name, node_id, state, spec_json, deployer_version, \
         created_at, updated_at, job_id, ssh_key_fingerprint) VALUES (?1, ?2, ?3, ?4, ?5, 'deploying', ?6, ?7, ?8, ?8, ?9, ?10)",
        params![
            v.user_id,
            v.forge_username,
            v.backend,
            v.name,
            v.node_id,
            v.spec_json,
            super::DEPLOYER_VERSION,
            v.now,
            v.job_id,
            v.ssh_key_fingerprint
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The step condition "this job asked the backend to make something": a `deploy_vm` or `deploy_gateway` step that
/// started (`job_steps` of `job_id = ?1`).
const JOB_ASKED_BACKEND: &str = "SELECT EXISTS(SELECT 1 FROM job_steps WHERE job_id = ?1 \
     AND name IN ('deploy_vm', 'deploy_gateway') AND (attempts > 0 OR state != 'pending'))";

/// Makes `job_id` the job of VM row `vm_id` — the one way a row's job changes.
///
/// Why not a plain `UPDATE … SET job_id`: a row is adopted by every later deploy of the same VM, and the
/// replaced job may have asked the backend (a deploy that timed out after tofu started applying). That proof
/// lived only in the old job's steps, so a second attempt that failed early made [`may_exist_on_backend`] say
/// "never asked", and decommission left the first attempt's VM running. The old job's answer is folded into the
/// sticky `backend_asked` first, in the same write.
pub fn set_job(conn: &Connection, vm_id: i64, job_id: i64) -> rusqlite::Result<()> {
    let old: Option<i64> =
        conn.query_row_cached("SELECT job_id FROM vms WHERE vm_id = ?1", [vm_id], |r| {
            r.get(0)
        })?;
    if let Some(old) = old.filter(|old| *old != job_id) {
        if conn.query_row_cached(JOB_ASKED_BACKEND, [old], |r| r.get::<_, bool>(0))? {
            conn.execute_cached("UPDATE vms SET backend_asked = 1 WHERE vm_id = ?1", [vm_id])?;
        }
    }
    conn.execute_cached(
        "UPDATE vms SET job_id = ?2 WHERE vm_id = ?1",
        params![vm_id, job_id],
    )?;
    Ok(())
}

/// Active gateway rows: `(name, user_id)`.
pub fn live_gateway_names(conn: &Connection) -> rusqlite::Result<Vec<(String, UserId)>> {
    conn.prepare_cached("SELECT name, user_id FROM gateway_mappings WHERE state = 'active'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Records the gateway (one active row per user and name).
#[allow(clippy::too_many_arguments)]
pub fn upsert_gateway(
    conn: &Connection,
    user_id: UserId,
    vm_id: Option<i64>,
    name: &str,
    fqdn: &str,
    backend_url: &str,
    node_id: Option<u32>,
    now: i64,
) -> rusqlite::Result<()> {
    let updated = conn.execute_cached(
        "UPDATE gateway_mappings SET vm_id = ?2, fqdn = ?4, backend_url = ?5, node_id = ?6 \
         WHERE user_id = ?1 AND name = ?3 AND state = 'active'",
        params![user_id, vm_id, name, fqdn, backend_url, node_id],
    )?;
    if updated == 0 {
        conn.execute_cached(
            "INSERT INTO gateway_mappings(user_id, vm_id, name, fqdn, backend_url, node_id, state, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7)",
            params![user_id, vm_id, name, fqdn, backend_url, node_id, now],
        )?;
    }
    Ok(())
}

pub fn mark_gateways_deleted(
    conn: &Connection,
    user_id: UserId,
    now: i64,
) -> rusqlite::Result<usize> {
    conn.execute_cached(
        "UPDATE gateway_mappings SET state = 'deleted', deleted_at = ?2 WHERE user_id = ?1 AND state = 'active'",
        params![user_id, now],
    )
}

/// Marks the user's live VM rows on `backend` decommissioned — only that backend's: a decommission or cleanup
/// deletes on one backend, and a row another backend keeps (an earlier attempt there) may still stand for a VM.
/// Marked with the others, it vanished from reconcile's view while its VM ran on.
pub fn mark_vms_decommissioned(
    conn: &Connection,
    user_id: UserId,
    backend: &str,
    now: i64,
) -> rusqlite::Result<usize> {
    conn.execute_cached(
        "UPDATE vms SET state = 'decommissioned', decommissioned_at = ?2, updated_at = ?2 \
         WHERE user_id = ?1 AND backend = ?3 AND state != 'decommissioned'",
        params![user_id, now, backend],
    )
}

impl Provisioner {
    /// `deployer.list_vms`.
    pub async fn list_vms(&self, filter: Option<String>) -> Result<VmList, ServiceError> {
        self.db()
            .call(move |conn| -> Result<VmList, ServiceError> {
                Ok(VmList {
                    vms: live_vms(conn, filter.as_deref())?,
                })
            })
            .await
    }

    /// `deployer.get_vm`.
    pub async fn get_vm(&self, user_id: UserId) -> Result<VmDetails, ServiceError> {
        self.deployer().get_user(user_id).await?;
        let key = self.public_key(user_id).await?;
        self.db()
            .call(move |conn| -> Result<VmDetails, ServiceError> {
                Ok(VmDetails {
                    user_id,
                    vm: live_vm(conn, user_id)?,
                    history: history(conn, user_id)?,
                    ssh_key_fingerprint: key.as_ref().map(|k| k.fingerprint.clone()),
                    ssh_public_key: key.map(|k| k.public_key),
                })
            })
            .await
    }
}

/// Whether anything of the VM row `vm` may exist on its backend: the backend reported it
/// (addresses, backend id), the user has an active gateway row, or a job that wrote the row
/// ever started `deploy_vm` or `deploy_gateway` (its current job, or an earlier one: `backend_asked`,
/// see [`set_job`]). A row without a job counts as reached (we cannot tell). `false` means the
/// backend was provably never asked, so decommissioning it needs no backend at all (a backend
/// that is not configured cannot keep the record alive).
pub fn may_exist_on_backend(conn: &Connection, vm: &VmRecord) -> rusqlite::Result<bool> {
    if vm.private_ip.is_some() || vm.mycelium_ip.is_some() || vm.backend_id.is_some() {
        return Ok(true);
    }
    let gateways: i64 = conn.query_row_cached(
        "SELECT COUNT(*) FROM gateway_mappings WHERE user_id = ?1 AND state = 'active'",
        [vm.user_id],
        |r| r.get(0),
    )?;
    if gateways > 0 {
        return Ok(true);
    }
    let asked_before: bool = conn.query_row_cached(
        "SELECT backend_asked FROM vms WHERE vm_id = ?1",
        [vm.vm_id],
        |r| r.get(0),
    )?;
    if asked_before {
        return Ok(true);
    }
    let Some(job_id) = vm.job_id else {
        return Ok(true);
    };
    conn.query_row_cached(JOB_ASKED_BACKEND, [job_id], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    /// The filter is a plain name prefix of any length: `_` and `%` are characters, not wildcards, and a prefix of
    /// 50,001 characters matches nothing (as a LIKE pattern it failed as "too complex", an internal error).
    #[tokio::test]
    async fn the_filter_is_a_literal_prefix_of_any_length() {
        let db = Db::open_in_memory().unwrap();
        db.write(|conn| -> Result<(), ServiceError> {
            for (id, name) in [(1, "ann"), (2, "anna"), (3, "bob")] {
                conn.execute(
                    "INSERT INTO users(forge_username, email, created_at, updated_at) VALUES (?1, 'x@x.test', 1, 1)",
                    [name],
                )?;
                let vm = format!("hero_u{id}_{name}");
                record_planned(
                    conn,
                    None,
                    &PlannedVm {
                        user_id: id,
                        forge_username: name,
                        backend: "local",
                        name: &vm,
                        node_id: None,
                        spec_json: "{}",
                        job_id: None,
                        ssh_key_fingerprint: None,
                        now: 1,
                    },
                )?;
            }
            let names = |f: Option<&str>| -> rusqlite::Result<Vec<String>> {
                Ok(live_vms(conn, f)?.into_iter().map(|v| v.forge_username).collect())
            };
            assert_eq!(names(None)?, ["ann", "anna", "bob"]);
            assert_eq!(names(Some("ann"))?, ["ann", "anna"]);
            assert_eq!(names(Some(""))?, ["ann", "anna", "bob"]);
            for none in ["a_n", "%", "_", "ANN", "annb"] {
                assert!(names(Some(none))?.is_empty(), "{none}");
            }
            assert!(names(Some(&"a".repeat(50_001)))?.is_empty());
            Ok(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn history_lists_every_row_but_the_live_one_so_no_failed_attempt_hides() {
        let db = Db::open_in_memory().unwrap();
        db.write(|conn| -> Result<(), ServiceError> {
            conn.execute(
                "INSERT INTO users(forge_username, email, created_at, updated_at) VALUES ('alice','a@x.test',1,1)",
                [],
            )?;
            let planned = |backend: &'static str, name: &'static str| PlannedVm {
                user_id: 1,
                forge_username: "alice",
                backend,
                name,
                node_id: None,
                spec_json: "{}",
                job_id: None,
                ssh_key_fingerprint: None,
                now: 1,
            };
            // A failed attempt on one backend, then a VM on another: a second live row.
            let grid = record_planned(conn, None, &planned("opentofu", "hero_u1_alice"))?;
            conn.execute("UPDATE vms SET state = 'failed' WHERE vm_id = ?1", [grid])?;
            let live = live_vm(conn, 1)?;
            let local = record_planned(conn, live.as_ref(), &planned("local", "hero_u1_alice"))?;
            assert_ne!(grid, local);
            assert_eq!(live_vm(conn, 1)?.map(|v| v.vm_id), Some(local));
            let older: Vec<(i64, String)> =
                history(conn, 1)?.into_iter().map(|v| (v.vm_id, v.state)).collect();
            assert_eq!(older, [(grid, "failed".to_owned())]);
            // A row a failed decommission left behind, adopted by a new deploy, is deploying again.
            conn.execute("UPDATE vms SET state = 'decommissioning' WHERE vm_id = ?1", [local])?;
            let live = live_vm(conn, 1)?;
            assert_eq!(
                record_planned(conn, live.as_ref(), &planned("local", "hero_u1_alice"))?,
                local
            );
            assert_eq!(live_vm(conn, 1)?.map(|v| v.state).as_deref(), Some("deploying"));
            // A stored state nobody knows is an error, not a guess.
            conn.execute("UPDATE vms SET state = 'deploing' WHERE vm_id = ?1", [grid])?;
            assert!(history(conn, 1).is_err());
            Ok(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_later_job_on_the_row_never_hides_that_an_earlier_one_asked_the_backend() {
        let db = Db::open_in_memory().unwrap();
        db.write(|conn| -> Result<(), ServiceError> {
            conn.execute(
                "INSERT INTO users(forge_username, email, created_at, updated_at) VALUES ('alice','a@x.test',1,1)",
                [],
            )?;
            // A job whose deploy_vm step started (`asked`) or never did, with its two deploy steps.
            let job = |asked: bool| -> rusqlite::Result<i64> {
                conn.execute(
                    "INSERT INTO jobs(user_id, forge_username, kind, state, backend, actor, created_at_ms) \
                     VALUES (1, 'alice', 'provision', 'failed', 'opentofu', 'op', 1)",
                    [],
                )?;
                let id = conn.last_insert_rowid();
                conn.execute(
                    "INSERT INTO job_steps(job_id, step_index, name, state, attempts) VALUES \
                     (?1, 3, 'deploy_vm', ?2, ?3), (?1, 4, 'deploy_gateway', 'pending', 0)",
                    params![id, if asked { "failed" } else { "pending" }, i64::from(asked)],
                )?;
                Ok(id)
            };
            let planned = |job_id| PlannedVm {
                user_id: 1,
                forge_username: "alice",
                backend: "opentofu",
                name: "hero_u1_alice",
                node_id: None,
                spec_json: "{}",
                job_id: Some(job_id),
                ssh_key_fingerprint: None,
                now: 1,
            };
            let never = job(false)?;
            let vm_id = record_planned(conn, None, &planned(never))?;
            let vm = |conn: &Connection| live_vm(conn, 1).map(Option::unwrap);
            assert!(!may_exist_on_backend(conn, &vm(conn)?)?, "no job asked");
            // The first attempt asks and fails; a second adopts the row (record_planned) and fails early,
            // a third is set by the job's own fact (set_job): each time the first one's call still counts.
            let asked = job(true)?;
            set_job(conn, vm_id, asked)?;
            assert!(may_exist_on_backend(conn, &vm(conn)?)?);
            let early = job(false)?;
            assert_eq!(record_planned(conn, Some(&vm(conn)?), &planned(early))?, vm_id);
            assert_eq!(vm(conn)?.job_id, Some(early));
            assert!(may_exist_on_backend(conn, &vm(conn)?)?, "the first attempt's call is remembered");
            let third = job(false)?;
            set_job(conn, vm_id, third)?;
            set_job(conn, vm_id, third)?;
            assert!(may_exist_on_backend(conn, &vm(conn)?)?);
            Ok(())
        })
        .await
        .unwrap();
    }
}
