//! `reconcile --fix` takes its snapshot of the records, then asks the backends (minutes, through
//! `tofu` on the grid). A deploy started in between makes a resource the snapshot does not know;
//! the fix must not remove it. Real server, dev Forge and local backend; the inventory is held by
//! the `inventory_hold` test hook while the deploy runs (`test-hooks` builds only).
#![cfg(feature = "test-hooks")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use std::time::{Duration, Instant};

use hero_os_tfgrid_deployer_sdk::jobs::*;
use serde_json::json;
use support::poll_pause;
use support_jobs::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_made_while_reconcile_was_listing_is_not_removed_as_an_orphan() {
    let (stack, faults) = stack(vec![(
        "HERO_DEPLOYER_HEALTH_INTERVAL_SECS".into(),
        "0".into(),
    )])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client().clone();
    let alice = new_user(&c, "alice").await;

    // The reconcile snapshots the records (no VM for alice) and waits in the backend's inventory.
    let held = faults.with_extension("inventory_held");
    set_faults(&faults, json!({"inventory_hold": true}));
    let reconcile = {
        let c = c.clone();
        tokio::spawn(async move { c.reconcile(true).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !held.exists() {
        assert!(Instant::now() < deadline, "the inventory was never held");
        poll_pause();
    }
    // Meanwhile alice is deployed: her VM, gateway and OAuth app exist now, unknown to the snapshot.
    let job = c.provision_vm(alice, None).await.unwrap();
    let (job, events) = follow(&c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    let vm = c.get_vm(alice).await.unwrap().vm.unwrap();

    set_faults(&faults, json!({}));
    let report = tokio::time::timeout(Duration::from_secs(60), reconcile)
        .await
        .expect("reconcile ended")
        .unwrap()
        .unwrap();
    assert!(
        report.removed.is_empty() && report.orphans.is_empty(),
        "{report:?}"
    );
    // Her VM still answers through its gateway, and its OAuth app is still on Forge.
    assert_eq!(gateway_health(vm.url.as_deref().unwrap()).await, Ok(200));
    assert_eq!(forge_apps(&stack, "alice").await.len(), 1);
}
