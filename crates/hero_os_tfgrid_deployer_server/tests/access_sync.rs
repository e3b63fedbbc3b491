//! Who may open a ready VM follows the deployer's admin list (`fleet::access`): a name taken off
//! `deployer/ADMIN_FORGE_USERS` is taken off every ready VM's SSO edge by a `sync_access` job the
//! server starts by itself. Before, the list reached a VM only at deploy or repair, so a removed
//! admin kept opening every VM deployed while they were on it. Against the real server, the real
//! sandbox VM (its hero_proxy reads the slot checked here on every request) and the dev Forge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_fleet;
mod support_jobs;

use std::time::{Duration, Instant};

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::methods::SecretSet;
use hero_os_tfgrid_deployer_sdk::types::SecretSetParams;
use hero_secrets::SecretStore as _;
use support_jobs::*;

async fn set_admins(stack: &support::Stack, value: &str) {
    stack
        .client()
        .call::<SecretSet>(&SecretSetParams {
            slot: "deployer/ADMIN_FORGE_USERS".into(),
            value: value.into(),
        })
        .await
        .unwrap();
}

/// The admin list on the VM's own edge, as its hero_proxy reads it.
async fn vm_admins(stack: &support::Stack, user_id: i64) -> Option<String> {
    let store = hero_secrets::FileSecretStore::open(
        &sandbox_dir(stack, &format!("hero_u{user_id}_alice")).join("secrets"),
    )
    .unwrap();
    store
        .get("deployer/ADMIN_FORGE_USERS")
        .await
        .unwrap()
        .map(|v| v.expose().to_owned())
}

fn sync_jobs(page: &JobsPage) -> Vec<&Job> {
    page.jobs
        .iter()
        .filter(|j| j.kind == JobKind::SyncAccess)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_off_the_admin_list_is_taken_off_every_ready_vm() {
    let config = format!("{FAST_CONFIG}\n[provision.access]\ninterval_secs = 1\n");
    let (stack, _) = stack_with(config, Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    set_admins(&stack, "Ops-One, ops-two").await;
    let user_id = new_user(c, "alice").await;
    let job = c.provision_vm(user_id, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    assert_eq!(
        vm_admins(&stack, user_id).await.as_deref(),
        Some("ops-one,ops-two")
    );

    // ops-one leaves: within a few sweeps the VM's edge no longer lists them.
    set_admins(&stack, "ops-two").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm_admins(&stack, user_id).await.as_deref() != Some("ops-two") {
        assert!(
            Instant::now() < deadline,
            "the VM still lists the removed admin: {:?}\n{}",
            vm_admins(&stack, user_id).await,
            stack.server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = c
        .list_jobs(&ListJobsParams {
            user_id: Some(user_id),
            ..Default::default()
        })
        .await
        .unwrap();
    let synced = sync_jobs(&jobs);
    assert_eq!(synced.len(), 1, "one sync for one change: {:?}", jobs.jobs);
    let (sync, events) = follow(c, synced[0].job_id).await;
    assert_eq!(sync.state, JobState::Succeeded, "{}", messages(&events));
    assert_eq!(
        sync.steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["configure_sso"],
        "only the edge's slots are written: nothing is restarted"
    );
    assert_eq!(
        c.get_vm(user_id).await.unwrap().vm.unwrap().state,
        "ready",
        "the VM stays ready"
    );

    // The row records what the VM was given, so no sweep starts another sync for it: the
    // sweep's own query, on the server's database, finds nothing to do.
    let db = rusqlite::Connection::open(stack.server.data_dir().join("state.db")).unwrap();
    let pushed: Option<String> = db
        .query_row(
            "SELECT admins_pushed FROM vms WHERE user_id = ?1 AND state = 'ready'",
            [user_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pushed.as_deref(), Some("ops-two"));

    // Nobody left on the list is a change too: the VM must not keep the last name.
    set_admins(&stack, ",").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm_admins(&stack, user_id).await.as_deref() != Some(",") {
        assert!(Instant::now() < deadline, "{}", stack.server.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = stack.server.log_text();
    assert!(
        !audit.contains("access sweep failed"),
        "the sweep never failed: {audit}"
    );
}

/// Which ready VMs a sweep syncs (`fleet::access::stale_vms`), on a real database seeded the way
/// provisioning leaves it: a VM given another list or none recorded, unless its last sync failed
/// within the retry pause (so an unreachable VM costs one job per pause, not one per sweep).
#[tokio::test]
async fn a_sweep_syncs_the_vms_given_another_list_and_pauses_after_a_failed_sync() {
    use hero_os_tfgrid_deployer_server::db::Db;
    use hero_os_tfgrid_deployer_server::error::ServiceError;
    use hero_os_tfgrid_deployer_server::fleet::access::stale_vms;
    const NOW_MS: i64 = 1_800_000_000_000;
    const PAUSE_MS: i64 = 600_000;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("state.db")).unwrap();
    support_fleet::seed_ready_vms(
        &db,
        1,
        |_| "alice".into(),
        |_| "http://alice.localhost/".into(),
    )
    .await
    .unwrap();
    let failed_job = |kind: &str, ago_ms: i64| {
        format!(
            "INSERT INTO jobs(user_id, forge_username, kind, state, backend, actor, created_at_ms, \
             finished_at_ms) SELECT user_id, 'alice', '{kind}', 'failed', 'local', 't', 0, {} FROM vms",
            NOW_MS - ago_ms
        )
    };
    let cases: Vec<(&str, Vec<String>, bool)> = vec![
        ("none recorded (a row from before the column)", vec![], true),
        (
            "given this list",
            vec!["UPDATE vms SET admins_pushed = 'ann,ben'".into()],
            false,
        ),
        (
            "given another list",
            vec!["UPDATE vms SET admins_pushed = 'ann'".into()],
            true,
        ),
        (
            "given nobody",
            vec!["UPDATE vms SET admins_pushed = ','".into()],
            true,
        ),
        (
            "a sync failed a minute ago",
            vec![
                "UPDATE vms SET admins_pushed = 'ann'".into(),
                failed_job("sync_access", 60_000),
            ],
            false,
        ),
        (
            "a sync failed longer ago than the pause",
            vec![
                "UPDATE vms SET admins_pushed = 'ann'".into(),
                failed_job("sync_access", PAUSE_MS + 1),
            ],
            true,
        ),
        (
            "a repair failed a minute ago (only a failed sync pauses)",
            vec![
                "UPDATE vms SET admins_pushed = 'ann'".into(),
                failed_job("repair", 60_000),
            ],
            true,
        ),
        (
            "given another list but no longer ready",
            vec!["UPDATE vms SET admins_pushed = 'ann', state = 'decommissioning'".into()],
            false,
        ),
    ];
    for (what, setup, want) in cases {
        let got = db
            .write(move |conn| -> Result<bool, ServiceError> {
                conn.execute_batch(
                    "DELETE FROM jobs WHERE kind IN ('sync_access', 'repair'); \
                     UPDATE vms SET admins_pushed = NULL, state = 'ready';",
                )?;
                for sql in &setup {
                    conn.execute(sql, [])?;
                }
                Ok(!stale_vms(conn, "ann,ben", NOW_MS - PAUSE_MS)?.is_empty())
            })
            .await
            .unwrap();
        assert_eq!(got, want, "{what}");
    }
}
