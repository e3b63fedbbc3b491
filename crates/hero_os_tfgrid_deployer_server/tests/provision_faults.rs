//! Failure paths of the provisioning pipeline, with the fault-injection switches that exist only
//! in `test-hooks` builds (`cargo test -p hero_os_tfgrid_deployer_server --features test-hooks`):
//! kill -9 at every step, backend faults with retries and a precise reason, cancel with cleanup,
//! and the reaper. Real server binary, real dev Forge, local backend with real sshd.
#![cfg(feature = "test-hooks")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::{ListEventsParams, VmStatus};
use hero_os_tfgrid_deployer_server::provision::steps::PROVISION_STEPS;
use serde_json::json;
use support_jobs::*;

/// The provision steps, from the step table: a new step is crash-tested without editing here.
const STEPS: &[&str] = PROVISION_STEPS;
/// `N` of "step n/N".
fn n() -> usize {
    STEPS.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_every_step_then_restart_ends_with_exactly_one_vm_and_gateway() {
    let (mut stack, _) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let mut expected = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        for at in [step.to_string(), format!("{step}:end")] {
            let username = format!(
                "crash{}{}",
                i + 1,
                if at.ends_with(":end") { "e" } else { "s" }
            );
            let user_id = new_user(stack.client(), &username).await;
            let server = &mut stack.server;
            server
                .crash_at(&at, |c| async move { c.provision_vm(user_id, None).await })
                .await;
            let c = &server.client;
            let jobs = c
                .list_jobs(&ListJobsParams {
                    user_id: Some(user_id),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(jobs.jobs.len(), 1, "one job for {username}");
            let (job, events) = follow(c, jobs.jobs[0].job_id).await;
            assert_eq!(
                job.state,
                JobState::Succeeded,
                "crash at {at}: {:?}\n{}",
                job.error,
                messages(&events)
            );
            assert!(messages(&events).contains("server restarted: resuming the job"));
            expected.push(format!("hero_u{user_id}_{username}"));
            expected.sort();
            assert_eq!(
                sandboxes(&stack),
                expected,
                "exactly one VM per user after crash at {at}"
            );
            assert_eq!(
                routes(&stack),
                expected,
                "exactly one gateway per user after crash at {at}"
            );
            let sso = forge_apps(&stack, &username).await;
            assert_eq!(
                sso.len(),
                1,
                "exactly one OAuth app per VM after crash at {at}: {sso:?}"
            );
            let secret = stored_client_secret(&stack, user_id).await.unwrap();
            assert!(
                client_secret_works(&stack, sso[0]["client_id"].as_str().unwrap(), &secret).await,
                "after crash at {at} the stored secret is the app's current one"
            );
            if at == "register_sso:end" {
                // The secret was stored but the job had not recorded the app: the stored secret
                // cannot be trusted to be this app's, so it is rotated, never a second app made.
                assert!(
                    messages(&events).contains("adopted, secret rotated"),
                    "{}",
                    messages(&events)
                );
            }
            let url = job.result.unwrap().url;
            assert_eq!(gateway_health(&url).await.unwrap(), 200);
        }
    }
    let report = stack.client().reconcile(false).await.unwrap();
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
}

/// Provisions `name` with `faults` armed: the job must fail at `step` with `reason` in its error;
/// with the faults cleared, `retry_job` resumes at that step and completes.
async fn fails_then_retry_completes(
    stack: &support::Stack,
    faults_file: &std::path::Path,
    name: &str,
    faults: serde_json::Value,
    step: &str,
    reasons: &[&str],
) {
    let c = stack.client();
    let user_id = new_user(c, name).await;
    set_faults(faults_file, faults);
    let job = c.provision_vm(user_id, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
    let error = job.error.clone().unwrap();
    let index = STEPS.iter().position(|s| *s == step).unwrap() + 1;
    assert!(
        error.starts_with(&format!("step {index}/{} {step} failed after", n())),
        "{error}"
    );
    for r in reasons {
        assert!(error.contains(r), "{error} should contain {r}");
    }
    assert_eq!(job.current_step.as_deref(), Some(step));
    assert_eq!(job.steps[index - 1].state, StepState::Failed);
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_status,
        VmStatus::Failed
    );
    // The VM row says so too (it said `deploying` while the user said `failed`).
    let vm = c.get_vm(user_id).await.unwrap().vm;
    assert_eq!(vm.map(|v| v.state).as_deref(), Some("failed"));
    // The failure is audited with its reason (written with the job's end).
    let audit = c
        .list_events(&ListEventsParams {
            action: Some("vm.provision".into()),
            subject: Some(format!("user:{name}")),
            ..Default::default()
        })
        .await
        .unwrap();
    let failures: Vec<_> = audit
        .events
        .iter()
        .filter(|e| {
            e.action == "vm.provision"
                && e.subject == format!("user:{name}")
                && e.outcome.starts_with("error:")
        })
        .collect();
    assert_eq!(failures.len(), 1, "{:?}", audit.events);
    assert_eq!(
        failures[0].detail.as_deref(),
        Some(format!("job {}: {error}", job.job_id).as_str())
    );

    set_faults(faults_file, json!({}));
    let retried = c.retry_job(job.job_id).await.unwrap();
    assert!(retried.state.is_active());
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{:?}\n{}",
        job.error,
        messages(&events)
    );
    assert!(messages(&events).contains(&format!("resuming from step {index}/{} {step}", n())));
    // Steps before the failed one were not re-run by the retry.
    let after_retry = events
        .iter()
        .skip_while(|e| !e.message.contains("retry requested"))
        .map(|e| e.message.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !after_retry.contains(&format!("step 1/{} forge_user: started", n())),
        "{after_retry}"
    );
    assert_eq!(gateway_health(&job.result.unwrap().url).await.unwrap(), 200);
    let vm = c.get_vm(user_id).await.unwrap().vm;
    assert_eq!(vm.map(|v| v.state).as_deref(), Some("ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_faults_retry_then_fail_with_a_precise_reason_and_retry_job_completes() {
    let (stack, faults) = stack_failing_fast(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    fails_then_retry_completes(
        &stack,
        &faults,
        "timeouts",
        json!({"deploy_vm_timeouts": 3}),
        "deploy_vm",
        &[
            "after 3 attempt(s)",
            "backend.timeout",
            "deploy_vm timed out",
        ],
    )
    .await;
    fails_then_retry_completes(
        &stack,
        &faults,
        "fivexx",
        json!({"deploy_gateway_unavailable": 3}),
        "deploy_gateway",
        &["backend.unavailable", "HTTP 503"],
    )
    .await;
    fails_then_retry_completes(
        &stack,
        &faults,
        "refused",
        json!({"ssh_refused": true}),
        "wait_ssh",
        &["ssh.not_ready", "refused"],
    )
    .await;
    fails_then_retry_completes(
        &stack,
        &faults,
        "exitone",
        json!({"bootstrap_exit1": true}),
        "run_bootstrap",
        &[
            "after 3 attempt(s)",
            "bootstrap.failed",
            "exited with status 1",
        ],
    )
    .await;
    fails_then_retry_completes(
        &stack,
        &faults,
        "unhealthy",
        json!({"health_503": true}),
        "verify_health",
        &["health.failed", "HTTP 503"],
    )
    .await;
    // Each user ended with exactly one VM and one gateway.
    assert_eq!(sandboxes(&stack).len(), 5);
    assert_eq!(routes(&stack).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_row_comes_with_the_job_and_a_retry_after_decommission_records_a_new_one() {
    let (stack, faults) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "rowfirst").await;
    set_faults(&faults, json!({"deploy_vm_timeouts": 3}));
    let job = c.provision_vm(user_id, None).await.unwrap();
    // Committed with the job, before any step ran: persist, then act.
    let planned = c
        .get_vm(user_id)
        .await
        .unwrap()
        .vm
        .expect("a VM row with the job");
    assert_eq!(
        (
            planned.state.as_str(),
            planned.job_id,
            planned.name.as_str()
        ),
        (
            "deploying",
            Some(job.job_id),
            format!("hero_u{user_id}_rowfirst").as_str()
        )
    );
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));

    // The row of the failed attempt is decommissioned; a retry must not deploy against it.
    let decommission = c.decommission_vm(user_id).await.unwrap();
    assert_eq!(
        follow(c, decommission.job_id).await.0.state,
        JobState::Succeeded
    );
    set_faults(&faults, json!({}));
    c.retry_job(job.job_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    let details = c.get_vm(user_id).await.unwrap();
    let vm = details.vm.expect("a live VM after the retry");
    assert_ne!(
        vm.vm_id, planned.vm_id,
        "a new row, not the decommissioned one"
    );
    assert_eq!((vm.state.as_str(), vm.job_id), ("ready", Some(job.job_id)));
    assert_eq!(details.history.len(), 1);
    assert_eq!(details.history[0].vm_id, planned.vm_id);
    assert_eq!(sandboxes(&stack).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_job_deletes_what_the_job_made() {
    let (stack, faults) = stack_failing_fast(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "carl").await;
    // SSH refused keeps the job in wait_ssh, after the VM and gateway exist.
    set_faults(&faults, json!({"ssh_refused": true}));
    let job = c.provision_vm(user_id, None).await.unwrap();
    let seen = wait_event(c, job.job_id, |e| {
        e.step.as_deref() == Some("wait_ssh") && e.level == EventLevel::Warn
    })
    .await;
    assert!(
        seen.message.starts_with(&format!(
            "step {}/{} wait_ssh: attempt ",
            wait_ssh_at(),
            n()
        )),
        "{}",
        seen.message
    );
    assert_eq!(sandboxes(&stack).len(), 1);
    assert_eq!(routes(&stack).len(), 1);
    let dir = sandbox_dir(&stack, &sandboxes(&stack)[0]);

    let cancelling = c.cancel_job(job.job_id).await.unwrap();
    assert!(cancelling.state.is_active());
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(
        job.state,
        JobState::Cancelled,
        "{:?}\n{}",
        job.error,
        messages(&events)
    );
    let error = job.error.clone().unwrap();
    assert!(
        error.contains("cleanup removed the gateway and VM"),
        "{error}"
    );
    // The reason names the step the cancel stopped, not the job's start.
    assert!(
        error.starts_with(&format!(
            "cancelled during step {}/{} wait_ssh;",
            wait_ssh_at(),
            n()
        )),
        "{error}"
    );
    // No step stays `running` in a cancelled job.
    assert!(
        job.steps.iter().all(|s| s.state != StepState::Running),
        "{:?}",
        job.steps
    );
    let wait_ssh = &job.steps[wait_ssh_at() - 1];
    assert_eq!(
        (wait_ssh.state, wait_ssh.message.as_deref()),
        (StepState::Failed, Some("cancelled"))
    );
    assert!(sandboxes(&stack).is_empty());
    assert!(routes(&stack).is_empty());
    assert!(
        forge_apps(&stack, "carl").await.is_empty(),
        "a cancelled provision deletes the OAuth app it made"
    );
    assert!(processes_mentioning(&format!("{}/", dir.display())).is_empty());
    let details = c.get_vm(user_id).await.unwrap();
    assert!(details.vm.is_none());
    assert_eq!(details.history.len(), 1);
    assert_ne!(
        c.get_user(user_id).await.unwrap().vm_status,
        VmStatus::Provisioning
    );
    // Cancelling a finished job is refused.
    assert!(c.cancel_job(job.job_id).await.is_err());
    set_faults(&faults, json!({}));
    // The user can provision again afterwards.
    let job = c.provision_vm(user_id, None).await.unwrap();
    assert_eq!(follow(c, job.job_id).await.0.state, JobState::Succeeded);
}

/// A cancel's cleanup can take as long as a step (a grid `destroy`): it writes the heartbeat meanwhile, so the hang
/// detector leaves it alone, and the cancelled job is never resumed by `retry_job` (which would deploy again what
/// the operator cancelled). Before, the reaper failed it after `stale_after_ms` and a retry re-provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cancel_cleanup_is_not_reaped_and_is_never_retried() {
    use std::time::{Duration, Instant};
    let (stack, faults) = stack_failing_fast(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "cleo").await;
    set_faults(&faults, json!({"ssh_refused": true, "delete_hold": true}));
    let job = c.provision_vm(user_id, None).await.unwrap();
    wait_event(c, job.job_id, |e| {
        e.step.as_deref() == Some("wait_ssh") && e.level == EventLevel::Warn
    })
    .await;
    c.cancel_job(job.job_id).await.unwrap();
    let held = faults.with_extension("delete_held");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !held.exists() {
        assert!(
            Instant::now() < deadline,
            "the cleanup never reached delete_vm"
        );
        support::poll_pause();
    }
    // Held for twice the hang detector's bound (`stale_after_ms = 3000` in FAST_CONFIG): still cancelling.
    let window = Instant::now() + Duration::from_secs(6);
    while Instant::now() < window {
        let now = c.get_job(job.job_id).await.unwrap();
        assert_eq!(now.state, JobState::Cancelling, "{:?}", now.error);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    set_faults(&faults, json!({"ssh_refused": true}));
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(
        job.state,
        JobState::Cancelled,
        "{:?}\n{}",
        job.error,
        messages(&events)
    );
    let error = job.error.clone().unwrap();
    assert!(
        error.contains("cleanup removed the gateway and VM"),
        "{error}"
    );
    assert!(sandboxes(&stack).is_empty());
    let err = c.retry_job(job.job_id).await.unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_fails_a_job_whose_heartbeat_stopped_and_retry_resumes_it() {
    let (stack, faults) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "stuck").await;
    set_faults(&faults, json!({"stall_at": "push_manifest"}));
    let job = c.provision_vm(user_id, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
    let error = job.error.clone().unwrap();
    assert!(error.contains("no heartbeat for"), "{error}");
    assert!(error.contains("during step push_manifest"), "{error}");
    set_faults(&faults, json!({}));
    c.retry_job(job.job_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{:?}\n{}",
        job.error,
        messages(&events)
    );
}

/// Two deploys of one VM row: the first asked the backend and failed (its outcome unknown: a timed-out deploy may
/// have made the VM), the second failed before asking it. The decommission must still ask the backend. Before,
/// the second job's id replaced the first's on the row, and the decommission said the VM "never reached the
/// backend" and left whatever the first attempt made running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deploy_that_failed_early_does_not_hide_that_the_first_asked_the_backend() {
    let (stack, faults) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "twice").await;
    set_faults(&faults, json!({"deploy_vm_timeouts": 100}));
    let first = c.provision_vm(user_id, None).await.unwrap();
    let (first, events) = follow(c, first.job_id).await;
    assert_eq!(first.state, JobState::Failed, "{}", messages(&events));
    assert!(
        first
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("deploy_vm"),
        "{:?}",
        first.error
    );
    set_faults(&faults, json!({"stall_at": "select_node"}));
    let second = c.provision_vm(user_id, None).await.unwrap();
    let (second, events) = follow(c, second.job_id).await;
    assert_eq!(second.state, JobState::Failed, "{}", messages(&events));
    assert_eq!(
        c.get_vm(user_id).await.unwrap().vm.and_then(|v| v.job_id),
        Some(second.job_id),
        "the second deploy adopted the row"
    );
    set_faults(&faults, json!({}));
    let decommission = c.decommission_vm(user_id).await.unwrap();
    let (decommission, events) = follow(c, decommission.job_id).await;
    let text = messages(&events);
    assert_eq!(decommission.state, JobState::Succeeded, "{text}");
    assert!(!text.contains("never reached"), "{text}");
    assert!(text.contains("delete_vm"), "{text}");
}

/// 1-based position of `wait_ssh` in the provision table.
fn wait_ssh_at() -> usize {
    STEPS.iter().position(|s| *s == "wait_ssh").unwrap() + 1
}

/// What a retry may still act on. A failed provision of a user deleted since must not come back: before, it
/// deployed a VM (and gateway, and OAuth app) for a user row that no longer existed, which neither decommission
/// nor reconcile could then find. And a failed repair retried after the VM was decommissioned must not act on
/// what came after it: before, it set the user `ready` with no VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_never_acts_for_a_deleted_user_or_after_a_newer_job() {
    let (stack, faults) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let precondition = |e: hero_os_tfgrid_deployer_sdk::ClientError| {
        assert_eq!(
            e.kind(),
            Some(hero_os_tfgrid_deployer_sdk::ErrorKind::FailedPrecondition),
            "{e}"
        );
        e.to_string()
    };

    // A deleted user's failed provision.
    let gone = new_user(c, "gone").await;
    set_faults(&faults, json!({"deploy_vm_unavailable": 100}));
    let provision = c.provision_vm(gone, None).await.unwrap();
    assert_eq!(follow(c, provision.job_id).await.0.state, JobState::Failed);
    set_faults(&faults, json!({}));
    let decommission = c.decommission_vm(gone).await.unwrap();
    assert_eq!(
        follow(c, decommission.job_id).await.0.state,
        JobState::Succeeded
    );
    c.delete_user(gone).await.unwrap();
    let why = precondition(c.retry_job(provision.job_id).await.unwrap_err());
    assert!(why.contains("was deleted"), "{why}");
    assert!(sandboxes(&stack).is_empty(), "{:?}", sandboxes(&stack));
    let report = c.reconcile(false).await.unwrap();
    assert!(report.orphans.is_empty(), "{report:?}");

    // A failed repair, then a decommission: the repair is history.
    let later = new_user(c, "later").await;
    let provision = c.provision_vm(later, None).await.unwrap();
    assert_eq!(
        follow(c, provision.job_id).await.0.state,
        JobState::Succeeded
    );
    set_faults(&faults, json!({"bootstrap_exit1": true}));
    let repair = c.repair_vm(later).await.unwrap();
    assert_eq!(follow(c, repair.job_id).await.0.state, JobState::Failed);
    set_faults(&faults, json!({}));
    let decommission = c.decommission_vm(later).await.unwrap();
    assert_eq!(
        follow(c, decommission.job_id).await.0.state,
        JobState::Succeeded
    );
    let why = precondition(c.retry_job(repair.job_id).await.unwrap_err());
    assert!(why.contains("not the latest"), "{why}");
    assert_eq!(
        c.get_user(later).await.unwrap().vm_status,
        VmStatus::Decommissioned
    );
}
