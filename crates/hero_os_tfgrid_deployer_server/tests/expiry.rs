//! Expiry with a controlled clock (the test build's clock offset file, read by the server at
//! every clock reading; no sleeps): the default and per-deploy expiry, `extend_vm` (days and
//! never), the warning ahead of time, and the decommission of an expired VM as an audited job of
//! `system:expiry`, caught up by a server that was down (killed) at expiry time — and killed
//! again during that decommission, which still ends with no VM for the expired user and the
//! other user's VM untouched.
#![cfg(feature = "test-hooks")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use std::time::{Duration, Instant};

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::{AuditEvent, ListEventsParams, VmStatus};
use hero_os_tfgrid_deployer_sdk::Client;
use support::poll_pause;
use support_jobs::*;

const DAY: i64 = 86_400;

async fn audit(c: &Client, action: &str) -> Vec<AuditEvent> {
    c.list_events(&ListEventsParams {
        action: Some(action.into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .events
}

/// Waits (bounded) until the server's start-up sweep has written `action` for `subject`.
async fn wait_audit(c: &Client, action: &str, subject: &str) -> AuditEvent {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = audit(c, action)
            .await
            .into_iter()
            .find(|e| e.subject == subject)
        {
            return e;
        }
        assert!(Instant::now() < deadline, "no {action} for {subject}");
        poll_pause();
    }
}

async fn deploy(c: &Client, user_id: i64, expires_in_days: Option<u32>) {
    let options = expires_in_days.map(|d| ProvisionOptions {
        expires_in_days: Some(d),
        ..Default::default()
    });
    let job = c.provision_vm(user_id, options).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_vms_are_warned_then_decommissioned_by_system_expiry_even_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("clock-offset");
    std::fs::write(&offset, "0").unwrap();
    let (mut stack, _) = stack(vec![
        (
            "HERO_DEPLOYER_TEST_CLOCK_OFFSET_FILE".into(),
            offset.display().to_string(),
        ),
        ("HERO_DEPLOYER_EXPIRY_DEFAULT_DAYS".into(), "7".into()),
        ("HERO_DEPLOYER_EXPIRY_WARN_BEFORE_HOURS".into(), "48".into()),
        // Only the sweep of each start runs within this test.
        (
            "HERO_DEPLOYER_EXPIRY_CHECK_INTERVAL_SECS".into(),
            "3600".into(),
        ),
        ("HERO_DEPLOYER_HEALTH_INTERVAL_SECS".into(), "0".into()),
    ])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client().clone();
    let alice = new_user(&c, "alice").await;
    let bob = new_user(&c, "bob").await;
    let carl = new_user(&c, "carl").await;
    deploy(&c, alice, Some(3)).await;
    deploy(&c, bob, None).await;
    deploy(&c, carl, Some(1)).await;

    let a = c.get_vm(alice).await.unwrap().vm.unwrap();
    assert_eq!(a.expires_at, Some(a.created_at + 3 * DAY));
    let b = c.get_vm(bob).await.unwrap().vm.unwrap();
    assert_eq!(
        b.expires_at,
        Some(b.created_at + 7 * DAY),
        "the config default"
    );

    // Extended by two days from its expiry; bob's never expires.
    let a = c.extend_vm(alice, Some(2)).await.unwrap();
    assert_eq!(a.expires_at, Some(a.created_at + 5 * DAY));
    let b = c.extend_vm(bob, None).await.unwrap();
    assert_eq!(b.expires_at, None);
    let listed = c.list_vms(None).await.unwrap();
    let carl_deployed = c.get_vm(carl).await.unwrap().vm.unwrap();
    assert_eq!(
        listed.vms.iter().map(|v| v.expires_at).collect::<Vec<_>>(),
        [a.expires_at, None, Some(carl_deployed.created_at + DAY)]
    );
    let extends = audit(&c, "vm.extend").await;
    assert_eq!(extends.len(), 2);
    assert!(extends.iter().all(|e| e.actor == "local:operator"));
    // Zero days, and more than the ten-year bound (a slip of a few digits: before, a u32's worth was taken).
    let max = hero_os_tfgrid_deployer_sdk::jobs::MAX_EXTEND_DAYS;
    for days in [0, max + 1, u32::MAX] {
        let err = c
            .call::<hero_os_tfgrid_deployer_sdk::methods::ExtendVm>(&ExtendVmParams {
                user_id: alice,
                days: Some(days),
                never: false,
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            Some(hero_os_tfgrid_deployer_sdk::ErrorKind::InvalidParams),
            "{days}: {err}"
        );
    }
    assert_eq!(
        audit(&c, "vm.extend").await.len(),
        2,
        "nothing was extended"
    );
    // A deploy has the same bound: no expiry no extend could give, and no job started.
    let dora = new_user(&c, "dora").await;
    for days in [max + 1, u32::MAX] {
        let options = Some(ProvisionOptions {
            expires_in_days: Some(days),
            ..Default::default()
        });
        let err = c.provision_vm(dora, options).await.unwrap_err();
        assert_eq!(
            err.kind(),
            Some(hero_os_tfgrid_deployer_sdk::ErrorKind::InvalidParams),
            "{days}: {err}"
        );
        assert!(err.to_string().contains("at most 3650"), "{err}");
    }
    assert!(c.get_vm(dora).await.unwrap().vm.is_none());
    // Params of list_vms and check_health are read strictly, as every other method's: a misspelt filter is
    // refused rather than silently widened to everyone.
    for (method, params) in [
        (
            "deployer.list_vms",
            serde_json::json!({"username": "alice"}),
        ),
        ("deployer.check_health", serde_json::json!({"user": alice})),
    ] {
        let err = c.call_raw(method, params).await.unwrap_err();
        assert_eq!(
            err.kind(),
            Some(hero_os_tfgrid_deployer_sdk::ErrorKind::InvalidParams),
            "{method}: {err}"
        );
    }

    // 47.5 hours before alice's expiry, within one sweep interval of her warning time (the server down
    // meanwhile): the start-up sweep warns, on time, her expiry unmoved.
    std::fs::write(&offset, (5 * DAY - 47 * 3600 - 1800).to_string()).unwrap();
    stack.server.restart_after_crash();
    let warning = wait_audit(&c, "vm.expiry_warning", "user:alice").await;
    assert_eq!(warning.actor, "system:expiry");
    assert!(
        warning
            .detail
            .as_deref()
            .unwrap()
            .contains("vm extend alice"),
        "{warning:?}"
    );
    assert_eq!(
        audit(&c, "vm.expiry_warning").await.len(),
        2,
        "alice and carl; bob never expires"
    );
    let a_warned = c.get_vm(alice).await.unwrap().vm.unwrap();
    assert_eq!(
        (a_warned.state.as_str(), a_warned.expires_at),
        ("ready", a.expires_at),
        "warned, not yet decommissioned"
    );
    // carl's day passed while the server was down, his warning window with it: warned now, and his expiry
    // moved to the full notice from now. Before, the first sweep decommissioned him unwarned.
    let carl_warning = wait_audit(&c, "vm.expiry_warning", "user:carl").await;
    assert!(
        carl_warning
            .detail
            .as_deref()
            .unwrap()
            .contains("could not be given in time"),
        "{carl_warning:?}"
    );
    let carl_vm = c.get_vm(carl).await.unwrap().vm.unwrap();
    assert_eq!(carl_vm.state, "ready");
    assert_eq!(carl_vm.expires_at, Some(carl_warning.at + 48 * 3600));

    // A quarter of an hour after alice's expiry, the server down at expiry time: caught up on start. carl's notice
    // runs another quarter of an hour.
    std::fs::write(&offset, (5 * DAY + 900).to_string()).unwrap();
    stack.server.restart_after_crash();
    let requested = wait_audit(&c, "vm.decommission_requested", "user:alice").await;
    assert_eq!(requested.actor, "system:expiry");
    // Killed during that decommission: the next start resumes it (and starts no second one).
    stack.server.restart_after_crash();
    let jobs = c
        .list_jobs(&ListJobsParams {
            user_id: Some(alice),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    let decommissions: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.kind == JobKind::Decommission)
        .collect();
    assert_eq!(decommissions.len(), 1, "{jobs:?}");
    assert_eq!(decommissions[0].actor, "system:expiry");
    let (job, events) = follow(&c, decommissions[0].job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));

    // No VM for alice, bob's untouched.
    assert_eq!(
        c.get_user(alice).await.unwrap().vm_status,
        VmStatus::Decommissioned
    );
    let mut kept = vec![b.name.clone(), carl_vm.name.clone()];
    kept.sort();
    assert_eq!(sandboxes(&stack), kept, "carl's notice is not over yet");
    let b_now = c.get_vm(bob).await.unwrap().vm.unwrap();
    assert_eq!((b_now.state.as_str(), b_now.expires_at), ("ready", None));
    assert_eq!(
        audit(&c, "vm.decommission_requested").await.len(),
        1,
        "one decommission, by the expiry"
    );
}
