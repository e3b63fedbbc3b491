//! The health watch against a real local-backend sandbox: its web stack (hero_proxy in front of
//! the cockpit stand-in, real processes) is killed and started again, and `check_health` (the
//! "probe now" of the watch; the periodic rounds are off here) sees healthy → unreachable →
//! healthy, records since when and the last error, and audits each transition.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use std::path::Path;
use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::ListEventsParams;
use support::poll_pause;
use support_jobs::*;

/// Kills the sandbox's web processes by the PIDs in its `pids/` dir (only those whose command
/// line names the sandbox), and waits (bounded) until they are gone.
pub fn kill_web_stack(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    let mut killed = Vec::new();
    for name in ["hero_proxy", "cockpit"] {
        let text = std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid"))).unwrap();
        let pid: u32 = text.trim().parse().unwrap();
        assert!(
            processes_mentioning(&needle).contains(&pid),
            "{name} {pid} runs"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        killed.push(pid);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while processes_mentioning(&needle)
        .iter()
        .any(|p| killed.contains(p))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "web stack did not die"
        );
        poll_pause();
    }
    killed
}

/// Starts the sandbox's web stack again the way `run_bootstrap` does: the uploaded bootstrap
/// script with the sandbox env sourced (bounded: the script waits for its services, bounded).
pub async fn restart_web_stack(dir: &Path) {
    let script = format!(
        ". '{0}/env' && bash '{0}/work/setup-binaries.sh'",
        dir.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("bootstrap did not finish within 60 s")
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn one<'a>(list: &'a VmList, user: &str) -> &'a VmRecord {
    let found: Vec<&VmRecord> = list
        .vms
        .iter()
        .filter(|v| v.forge_username == user)
        .collect();
    assert_eq!(found.len(), 1, "{list:?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_web_stack_down_and_up_with_audited_transitions() {
    let (stack, _) = stack(vec![
        // Rounds only on demand: the test drives the watch with check_health.
        ("HERO_DEPLOYER_HEALTH_INTERVAL_SECS".into(), "0".into()),
        (
            "HERO_DEPLOYER_HEALTH_PROBE_DEADLINE_MS".into(),
            "3000".into(),
        ),
    ])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "alice").await;
    let other = new_user(c, "bob").await;
    let job = c.provision_vm(user_id, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));

    // Not probed yet: no verdict anywhere.
    let list = c.list_vms(None).await.unwrap();
    assert_eq!(one(&list, "alice").health, None);
    assert_eq!(c.get_user(user_id).await.unwrap().vm_health, None);
    assert!(
        list.vms.iter().all(|v| v.forge_username != "bob"),
        "bob has no VM"
    );
    assert_eq!(c.get_user(other).await.unwrap().vm_health, None);

    let list = c.check_health(None).await.unwrap();
    let h = one(&list, "alice").health.clone().unwrap();
    assert_eq!(h.state, HealthState::Healthy);
    assert_eq!(h.last_error, None);
    assert_eq!(h.last_healthy_at, Some(h.checked_at));
    let first_healthy = h.since;
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_health,
        Some(HealthState::Healthy)
    );

    let vm = c.get_vm(user_id).await.unwrap().vm.unwrap();
    let dir = sandbox_dir(&stack, &vm.name);
    kill_web_stack(&dir);

    let list = c.check_health(Some(user_id)).await.unwrap();
    let down = one(&list, "alice").health.clone().unwrap();
    assert_eq!(down.state, HealthState::Unreachable, "{down:?}");
    let error = down.last_error.clone().unwrap();
    assert!(error.contains("/health"), "{error}");
    assert_eq!(
        down.last_healthy_at, h.last_healthy_at,
        "last seen healthy kept"
    );
    assert!(down.since >= first_healthy);
    // vm show and user list read the same record.
    let shown = c.get_vm(user_id).await.unwrap().vm.unwrap().health.unwrap();
    assert_eq!(shown, down);
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_health,
        Some(HealthState::Unreachable)
    );
    // The listings carry since when, for the dashboard's "down since" badge.
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_health_since,
        Some(down.since)
    );
    // Still down on the next probe: the same "since", no new transition.
    let again = c.check_health(Some(user_id)).await.unwrap();
    assert_eq!(
        one(&again, "alice").health.as_ref().unwrap().since,
        down.since
    );

    restart_web_stack(&dir).await;
    let list = c.check_health(Some(user_id)).await.unwrap();
    let up = one(&list, "alice").health.clone().unwrap();
    assert_eq!(up.state, HealthState::Healthy, "{up:?}");
    assert_eq!(up.last_error, None);
    assert_eq!(up.last_healthy_at, Some(up.checked_at));
    assert_eq!(
        gateway_health(vm.url.as_deref().unwrap()).await.unwrap(),
        200
    );

    // Exactly two transitions, each an audit line by the watch.
    let audit = c
        .list_events(&ListEventsParams {
            action: Some("vm.health".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let lines: Vec<(String, String, String)> = audit
        .events
        .iter()
        .rev()
        .map(|e| (e.actor.clone(), e.subject.clone(), e.outcome.clone()))
        .collect();
    let watch = "system:health".to_owned();
    assert_eq!(
        lines,
        [
            (watch.clone(), "user:alice".into(), "unreachable".into()),
            (watch, "user:alice".into(), "healthy".into()),
        ]
    );
    assert!(audit.events[1]
        .detail
        .as_deref()
        .unwrap()
        .contains("healthy → unreachable"));

    // A user that does not exist is not_found, not an empty probe.
    let err = c.check_health(Some(9999)).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Some(hero_os_tfgrid_deployer_sdk::ErrorKind::NotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_brings_a_killed_web_stack_back_on_the_same_vm() {
    let (mut stack, _) = stack(vec![
        ("HERO_DEPLOYER_HEALTH_INTERVAL_SECS".into(), "0".into()),
        (
            "HERO_DEPLOYER_HEALTH_PROBE_DEADLINE_MS".into(),
            "3000".into(),
        ),
    ])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = &stack.client().clone();
    let user_id = new_user(c, "alice").await;
    let nobody = new_user(c, "bob").await;
    let job = c.provision_vm(user_id, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    let before = c.get_vm(user_id).await.unwrap().vm.unwrap();

    // Nothing to repair without a ready VM.
    let err = c.repair_vm(nobody).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Some(hero_os_tfgrid_deployer_sdk::ErrorKind::FailedPrecondition),
        "{err}"
    );

    let dir = sandbox_dir(&stack, &before.name);
    let killed = kill_web_stack(&dir);
    let down = c.check_health(Some(user_id)).await.unwrap();
    assert_eq!(
        one(&down, "alice").health.as_ref().unwrap().state,
        HealthState::Unreachable
    );

    let repair = c.repair_vm(user_id).await.unwrap();
    assert_eq!(repair.kind, JobKind::Repair);
    let names: Vec<&str> = repair.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        hero_os_tfgrid_deployer_server::provision::steps::REPAIR_STEPS
    );
    // One active job per user holds for repairs too.
    let err = c.repair_vm(user_id).await.unwrap_err();
    assert_eq!(
        err.kind(),
        Some(hero_os_tfgrid_deployer_sdk::ErrorKind::JobConflict),
        "{err}"
    );
    let (repair, events) = follow(c, repair.job_id).await;
    assert_eq!(
        repair.state,
        JobState::Succeeded,
        "{:?}\n{}",
        repair.error,
        messages(&events)
    );
    let text = messages(&events);
    for (i, name) in names.iter().enumerate() {
        assert!(
            text.contains(&format!("step {}/4 {name}: done in", i + 1)),
            "{text}"
        );
    }
    assert_steps_in_order(&events, &names);
    // New processes, on the same VM: one sandbox, the same row, host key and URL.
    let needle = format!("{}/", dir.display());
    assert!(processes_mentioning(&needle)
        .iter()
        .all(|p| !killed.contains(p)));
    assert_eq!(sandboxes(&stack), vec![before.name.clone()]);
    let after = c.get_vm(user_id).await.unwrap().vm.unwrap();
    assert_eq!(
        (
            after.vm_id,
            &after.url,
            &after.host_key_fingerprint,
            &after.state
        ),
        (
            before.vm_id,
            &before.url,
            &before.host_key_fingerprint,
            &before.state
        )
    );
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_status,
        hero_os_tfgrid_deployer_sdk::types::VmStatus::Ready
    );
    let up = c.check_health(Some(user_id)).await.unwrap();
    assert_eq!(
        one(&up, "alice").health.as_ref().unwrap().state,
        HealthState::Healthy
    );
    let audit = c
        .list_events(&ListEventsParams {
            action: Some("vm.repair_requested".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.events.len(), 1);
    assert_eq!(audit.events[0].subject, "user:alice");
    assert_eq!(audit.events[0].actor, "local:operator");

    // After a crash and restart the local gateway listens on another port (the tests' gateway
    // port is 0): a repair starts from where the VM's gateway is now, not where the provision
    // left it, and ends with the same single VM.
    stack.server.restart_after_crash();
    kill_web_stack(&dir);
    let again = c.repair_vm(user_id).await.unwrap();
    let (again, events) = follow(c, again.job_id).await;
    assert_eq!(
        again.state,
        JobState::Succeeded,
        "{:?}\n{}",
        again.error,
        messages(&events)
    );
    assert_eq!(sandboxes(&stack), vec![before.name.clone()]);
    assert_eq!(
        c.get_vm(user_id).await.unwrap().vm.unwrap().vm_id,
        before.vm_id
    );
}
