//! `deployer.redeploy_vm` against a real local-backend sandbox: a ready VM gets another service
//! profile in place (the repair steps with the new profile's `services.toml`, real bootstrap,
//! real health through the gateway), the VM row records the profile only when the job
//! succeeds, a later repair keeps it, and every refusal is specific.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use std::path::Path;

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::{ListEventsParams, VmStatus};
use hero_os_tfgrid_deployer_sdk::ErrorKind;
use support_jobs::*;

/// The `services.toml` the VM holds now (where the local backend's manifest path points).
fn manifest(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("home/hero/cfg/cockpit/services.toml")).unwrap()
}

/// The names of the `[[service]]` tables of a manifest, in order: which services the VM runs.
fn services(text: &str) -> Vec<String> {
    let doc: toml::Table = text.parse().unwrap();
    doc["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn succeeded(c: &hero_os_tfgrid_deployer_sdk::Client, job: Job) -> Job {
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{:?}\n{}",
        job.error,
        messages(&events)
    );
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_changes_the_profile_in_place_and_a_repair_keeps_it() {
    let (stack, faults) = stack(vec![(
        "HERO_DEPLOYER_HEALTH_INTERVAL_SECS".into(),
        "0".into(),
    )])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = &stack.client().clone();
    let alice = new_user(c, "alice").await;
    let bob = new_user(c, "bob").await;
    succeeded(c, c.provision_vm(alice, None).await.unwrap()).await;
    let before = c.get_vm(alice).await.unwrap().vm.unwrap();
    assert_eq!(before.profile.as_deref(), Some("demo"), "{before:?}");
    let dir = sandbox_dir(&stack, &before.name);
    let demo_services = services(&manifest(&dir));
    assert!(demo_services.len() > 2, "{demo_services:?}");

    // Refusals, each specific, none of which starts a job.
    let err = c.redeploy_vm(alice, "nope").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InvalidParams), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("\"nope\"") && text.contains("demo") && text.contains("minimal"),
        "names the profile and the known ones: {text}"
    );
    let err = c.redeploy_vm(bob, "minimal").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("no ready VM to redeploy"), "{err}");
    let err = c.redeploy_vm(999_999, "minimal").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NotFound), "{err}");
    let jobs = c
        .call::<hero_os_tfgrid_deployer_sdk::methods::ListJobs>(&ListJobsParams {
            user_id: Some(alice),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.jobs.len(), 1, "only the provision: {:?}", jobs.jobs);

    // The redeploy: the repair steps, one active job per user, the new manifest on the same VM.
    let job = c.redeploy_vm(alice, "minimal").await.unwrap();
    assert_eq!(job.kind, JobKind::Redeploy);
    let names: Vec<&str> = job.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        hero_os_tfgrid_deployer_server::provision::steps::REPAIR_STEPS
    );
    let err = c.repair_vm(alice).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::JobConflict), "{err}");
    assert_eq!(c.get_user(alice).await.unwrap().vm_status, VmStatus::Ready);
    succeeded(c, job).await;
    let text = manifest(&dir);
    assert!(text.contains("profile \"minimal\""), "{text}");
    assert_eq!(services(&text), ["proxy", "cockpit"]);
    let after = c.get_vm(alice).await.unwrap().vm.unwrap();
    assert_eq!(after.profile.as_deref(), Some("minimal"));
    assert_eq!(
        (after.vm_id, &after.url, &after.host_key_fingerprint),
        (before.vm_id, &before.url, &before.host_key_fingerprint)
    );
    assert_eq!(sandboxes(&stack), vec![before.name.clone()]);
    let health = c.check_health(Some(alice)).await.unwrap();
    assert_eq!(
        health.vms[0].health.as_ref().unwrap().state,
        HealthState::Healthy
    );
    let audit = c
        .list_events(&ListEventsParams {
            action: Some("vm.redeploy_requested".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.events.len(), 1, "{audit:?}");
    assert_eq!(audit.events[0].subject, "user:alice");

    // A repair pushes the profile the VM runs now, not the one its provision asked for.
    succeeded(c, c.repair_vm(alice).await.unwrap()).await;
    assert_eq!(services(&manifest(&dir)), ["proxy", "cockpit"]);

    // A redeploy that fails leaves the recorded profile as it was (the VM stays ready), and
    // a repair then restores that profile's manifest.
    set_faults(&faults, serde_json::json!({"bootstrap_exit1": true}));
    let job = c.redeploy_vm(alice, "demo").await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    if cfg!(feature = "test-hooks") {
        assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
        assert!(manifest(&dir).contains("profile \"demo\""));
        let vm = c.get_vm(alice).await.unwrap().vm.unwrap();
        assert_eq!(vm.profile.as_deref(), Some("minimal"));
        assert_eq!(c.get_user(alice).await.unwrap().vm_status, VmStatus::Ready);
        set_faults(&faults, serde_json::json!({}));
        succeeded(c, c.repair_vm(alice).await.unwrap()).await;
        assert_eq!(services(&manifest(&dir)), ["proxy", "cockpit"]);
    } else {
        assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
        assert_eq!(services(&manifest(&dir)), demo_services);
    }
}

/// kill -9 inside a redeploy (and inside the repair after it), at the start and at the end of a
/// step: the restarted server resumes the one job, which ends with the one VM, on the profile
/// the job asked for.
#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_redeploy_or_repair_resumes_and_keeps_one_vm() {
    let (mut stack, _) = stack(vec![(
        "HERO_DEPLOYER_HEALTH_INTERVAL_SECS".into(),
        "0".into(),
    )])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let alice = new_user(stack.client(), "alice").await;
    let c = stack.client().clone();
    succeeded(&c, c.provision_vm(alice, None).await.unwrap()).await;
    let vm = c.get_vm(alice).await.unwrap().vm.unwrap();
    let dir = sandbox_dir(&stack, &vm.name);
    for (kind, at, profile) in [
        (JobKind::Redeploy, "run_bootstrap", "minimal"),
        (JobKind::Redeploy, "push_manifest:end", "demo"),
        (JobKind::Repair, "verify_health", "demo"),
    ] {
        let server = &mut stack.server;
        server
            .crash_at(at, |c| async move {
                match kind {
                    JobKind::Redeploy => c.redeploy_vm(alice, profile).await,
                    _ => c.repair_vm(alice).await,
                }
            })
            .await;
        let c = &server.client;
        let job = c
            .list_jobs(&ListJobsParams {
                user_id: Some(alice),
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs
            .remove(0);
        assert_eq!(job.kind, kind, "{at}");
        let (job, events) = follow(c, job.job_id).await;
        assert_eq!(
            job.state,
            JobState::Succeeded,
            "crash at {at}: {:?}\n{}",
            job.error,
            messages(&events)
        );
        assert!(messages(&events).contains("server restarted: resuming the job"));
        let now = c.get_vm(alice).await.unwrap().vm.unwrap();
        assert_eq!(now.vm_id, vm.vm_id, "{at}");
        assert_eq!(now.profile.as_deref(), Some(profile), "{at}");
        assert!(
            manifest(&dir).contains(&format!("profile \"{profile}\"")),
            "{at}"
        );
        assert_eq!(c.get_user(alice).await.unwrap().vm_status, VmStatus::Ready);
        assert_eq!(sandboxes(&stack), vec![vm.name.clone()], "{at}");
    }
}
