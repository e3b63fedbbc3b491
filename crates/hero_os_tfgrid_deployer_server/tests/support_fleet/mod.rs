//! Seeds users with ready VMs for the health watch's loop test and its benchmark (which includes
//! this file with `#[path]`). Through the store functions a provision job uses — the VM row
//! `record_planned` writes for `deploy_vm`, the gateway row and URL of `deploy_gateway`, then what
//! `finalize`'s `VmReady` fact writes (its SQL is crate-private, so it is repeated here: state,
//! URL, `ready_at`, and the user's `vm_status`) — without running the jobs: the watch only reads
//! ready rows with a URL, and 1,000 jobs would make the benchmark about provisioning.
#![allow(dead_code)]

use hero_os_tfgrid_deployer_sdk::types::{UserId, VmStatus};
use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::error::ServiceError;
use hero_os_tfgrid_deployer_server::provision::{states::VmState, store, vms};

/// A seeded user and the public URL of its ready VM.
#[derive(Debug, Clone)]
pub struct ReadyVm {
    pub user_id: UserId,
    pub vm_id: i64,
    pub username: String,
    pub url: String,
}

/// Inserts `count` active users named `name(i)`, each with one ready VM whose public URL is
/// `url(i)`, all in one write.
pub async fn seed_ready_vms(
    db: &Db,
    count: usize,
    name: impl Fn(usize) -> String,
    url: impl Fn(usize) -> String,
) -> Result<Vec<ReadyVm>, ServiceError> {
    let wanted: Vec<(String, String)> = (0..count).map(|i| (name(i), url(i))).collect();
    db.write(move |conn| {
        let now = 1_700_000_000;
        let mut out = Vec::with_capacity(wanted.len());
        for (username, url) in wanted {
            conn.execute(
                "INSERT INTO users(forge_username, email, forge_user_id, forge_created, setup_state, \
                 created_at, updated_at) VALUES (?1, ?1 || '@fleet.test', 1, 1, 'active', ?2, ?2)",
                rusqlite::params![username, now],
            )?;
            let user_id = conn.last_insert_rowid();
            let vm_name = format!("hero-{username}");
            let vm_id = vms::record_planned(
                conn,
                None,
                &vms::PlannedVm {
                    user_id,
                    forge_username: &username,
                    backend: "local",
                    name: &vm_name,
                    node_id: None,
                    spec_json: "{}",
                    job_id: None,
                    ssh_key_fingerprint: None,
                    now,
                },
            )?;
            let fqdn = reqwest::Url::parse(&url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            vms::upsert_gateway(
                conn,
                user_id,
                Some(vm_id),
                &vm_name,
                &fqdn,
                "http://127.0.0.1:9988",
                None,
                now,
            )?;
            conn.execute(
                "UPDATE vms SET state = ?2, url = ?3, ready_at = ?4, updated_at = ?4 WHERE vm_id = ?1",
                rusqlite::params![vm_id, VmState::Ready, url, now],
            )?;
            store::set_user_vm_status(conn, user_id, VmStatus::Ready, now)?;
            out.push(ReadyVm {
                user_id,
                vm_id,
                username,
                url,
            });
        }
        Ok(out)
    })
    .await
}
