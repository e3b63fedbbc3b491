//! `deployer.forget_vm` (issue 16): a VM record whose resources are gone can be forgotten, so
//! no record holds a user forever; a record whose resources may still exist cannot, unless the
//! operator forces it, and never while a job runs. Against the real server binary, the dev
//! Forge, the local backend (real sshd and gateway) and real sqlite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::{AuditEvent, ListEventsParams, VmStatus};
use hero_os_tfgrid_deployer_sdk::{Client, ClientError, ErrorKind};
use support_jobs::*;

/// The `vm.forget` audit lines, newest first (not `vm.forget_sso_app`).
async fn forget_audit(c: &Client) -> Vec<AuditEvent> {
    c.list_events(&ListEventsParams {
        action: Some("vm.forget".into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .events
    .into_iter()
    .filter(|e| e.action == "vm.forget")
    .collect()
}

/// `data.detail.code` of a refusal.
fn refusal_code(err: &ClientError) -> String {
    match err {
        ClientError::Rpc(e) => e
            .data
            .as_ref()
            .and_then(|d| d.detail.as_ref())
            .and_then(|d| d["code"].as_str())
            .unwrap_or_default()
            .to_owned(),
        other => panic!("not an RPC error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_sandbox_is_not_forgotten_and_a_decommission_leftover_is() {
    let (stack, _) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "lena").await;
    let job = c.provision_vm(user_id, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    let name = format!("hero_u{user_id}_lena");

    // The sandbox and its gateway are live: the backend says so, and nothing is forgotten.
    let err = c.forget_vm(user_id, false).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Refused), "{err}");
    assert_eq!(refusal_code(&err), "vm.still_exists");
    let text = err.to_string();
    for want in [
        format!("vm {name} on local"),
        format!("gateway {name} on local"),
        "vm delete lena".to_owned(),
    ] {
        assert!(text.contains(&want), "{want:?} missing in {text}");
    }
    let vm = c
        .get_vm(user_id)
        .await
        .unwrap()
        .vm
        .expect("the record stays");
    assert_eq!(vm.state, "ready");
    let audit = forget_audit(c).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].outcome, "error:refused");
    assert_eq!(audit[0].subject, "user:lena");

    // A decommission that removed gateway and VM and then failed (Forge rejects the admin
    // token at delete_sso_app) leaves a record whose resources are gone.
    stack.server.set_admin_token("not-a-valid-token").await;
    let job = c.decommission_vm(user_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
    assert!(
        job.error
            .as_deref()
            .unwrap_or_default()
            .contains("delete_sso_app"),
        "{:?}",
        job.error
    );
    let err = c.delete_user(user_id).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("still has a VM"), "{err}");

    // The backend confirms both are gone: forgotten without --force.
    let r = c.forget_vm(user_id, false).await.unwrap();
    assert!(!r.forced);
    assert_eq!(r.vms, [format!("{name} on local")]);
    // (delete_gateway had already marked the gateway row deleted; the backend was asked anyway.)
    assert!(r.gateways.is_empty(), "{r:?}");
    assert!(
        r.grounds
            .iter()
            .any(|g| g.contains("local backend has no VM and no gateway")),
        "{r:?}"
    );
    assert!(r.sso_app.contains("not deleted"), "{r:?}");
    let details = c.get_vm(user_id).await.unwrap();
    assert!(details.vm.is_none(), "{details:?}");
    assert_eq!(c.get_user(user_id).await.unwrap().vm_status, VmStatus::NoVm);
    let audit = forget_audit(c).await;
    assert_eq!(audit[0].outcome, "ok", "{audit:?}");
    assert_eq!(audit[0].subject, "user:lena");
    let detail = audit[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("forced: no"), "{detail}");
    assert!(detail.contains(&format!("vm {name} on local")), "{detail}");
    assert!(!audit[0].actor.is_empty());

    // The app Forge kept is an orphan reconcile names and removes; then the user can go.
    stack
        .server
        .set_admin_token(&stack.forge.admin_token())
        .await;
    let report = c.reconcile(true).await.unwrap();
    assert!(
        report
            .removed
            .iter()
            .any(|o| o.kind == "oauth_app" && o.name == name),
        "{report:?}"
    );
    // Nothing left: forgetting again is a no-op that says so.
    let again = c.forget_vm(user_id, false).await.unwrap();
    assert!(
        again.vms.is_empty() && again.gateways.is_empty(),
        "{again:?}"
    );
    c.delete_user(user_id).await.unwrap();
}

/// The dead end of issue 16: a record that reached the opentofu backend, which then has no
/// mnemonic. It cannot be decommissioned, nor confirmed gone; `--force` forgets it (never while
/// a job runs), and the user can be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfigured_backend_record_is_forgotten_only_with_force_and_never_during_a_job() {
    use hero_os_tfgrid_deployer_sdk::methods::SecretDelete;
    use hero_os_tfgrid_deployer_sdk::types::SecretSlotParams;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // A gridproxy stand-in: while `hang` holds it accepts connections and never answers (a job
    // selecting a node stays active); then it closes each at once (select_node fails, before
    // the backend is asked).
    let gridproxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gridproxy_addr = gridproxy.local_addr().unwrap();
    let hang = Arc::new(AtomicBool::new(true));
    let hanging = hang.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in gridproxy.incoming().flatten() {
            if hanging.load(Ordering::SeqCst) {
                held.push(stream);
            }
        }
    });
    let mut stack = grid_stack(&format!("http://{gridproxy_addr}")).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "gridy").await;
    let slot = MNEMONIC_SLOT.to_owned();
    let on_grid = |node_id| on_backend("opentofu", node_id);

    // A job is active (selecting a node): refused, with or without --force, naming the job.
    let job = c.provision_vm(user_id, on_grid(None)).await.unwrap();
    for force in [false, true] {
        let err = c.forget_vm(user_id, force).await.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::JobConflict), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("job {}", job.job_id)), "{text}");
    }
    assert!(c.get_vm(user_id).await.unwrap().vm.is_some());
    c.cancel_job(job.job_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Cancelled, "{}", messages(&events));
    // The cancelled job closed its own record: nothing is left to forget, and that is no error.
    let r = c.forget_vm(user_id, false).await.unwrap();
    assert!(r.vms.is_empty() && r.gateways.is_empty(), "{r:?}");

    // A job that failed selecting a node left a record that never reached the backend:
    // forgotten without --force, and said why.
    hang.store(false, Ordering::SeqCst);
    let job = c.provision_vm(user_id, on_grid(None)).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
    assert!(c.get_vm(user_id).await.unwrap().vm.is_some());
    let r = c.forget_vm(user_id, false).await.unwrap();
    assert_eq!(r.vms, [format!("hero_u{user_id}_gridy on opentofu")]);
    assert_eq!(
        r.grounds,
        [format!(
            "hero_u{user_id}_gridy: never reached the opentofu backend"
        )]
    );
    assert!(c.get_vm(user_id).await.unwrap().vm.is_none());

    // A node pinned: deploy_vm runs (the stand-in `tofu` makes nothing), so the record
    // reached the backend. Then the mnemonic goes, and the server restarts (a running server
    // keeps the backend it built; a restarted one has none to build).
    let job = c.provision_vm(user_id, on_grid(Some(11))).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
    c.call::<SecretDelete>(&SecretSlotParams { slot })
        .await
        .unwrap();
    stack.server.restart_after_crash();
    let c = stack.client();
    let job = c.decommission_vm(user_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
    let err = c.delete_user(user_id).await.unwrap_err();
    assert!(err.to_string().contains("still has a VM"), "{err}");

    // Without --force: the backend cannot be asked, so nothing is forgotten.
    let err = c.forget_vm(user_id, false).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Refused), "{err}");
    assert_eq!(refusal_code(&err), "vm.unconfirmed");
    let text = err.to_string();
    assert!(
        text.contains("no TFGrid mnemonic") && text.contains("--force"),
        "{text}"
    );
    assert!(c.get_vm(user_id).await.unwrap().vm.is_some());

    // With --force: forgotten, audited as forced; the user can be deleted.
    let r = c.forget_vm(user_id, true).await.unwrap();
    assert!(r.forced);
    assert_eq!(r.vms, [format!("hero_u{user_id}_gridy on opentofu")]);
    let audit = forget_audit(c).await;
    assert_eq!(audit[0].outcome, "ok", "{audit:?}");
    let detail = audit[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("forced: yes"), "{detail}");
    assert!(
        detail.contains(&format!("vm hero_u{user_id}_gridy on opentofu")),
        "{detail}"
    );
    assert!(
        audit.iter().any(|e| e.outcome == "error:job_conflict"),
        "the refusals are audited too: {audit:?}"
    );
    c.delete_user(user_id).await.unwrap();
}

/// A deploy on the grid whose apply failed after creating the network: OpenTofu's state then holds
/// `grid_network.net` and no VM, so `get_vm` and `get_gateway` answer "none". Before, a forget took
/// that for "gone" and dropped the record while the network's contract ran on with nothing left to
/// remove it. The state here is written by the test, in OpenTofu's format (`version`, `resources`
/// with `type` and `name`), as a real partial apply leaves it; the stand-in `tofu` (`/bin/true`)
/// makes nothing itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_left_by_a_failed_apply_is_not_forgotten() {
    let stack = grid_stack("http://127.0.0.1:1").await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "netleft").await;
    // A pinned node: gridproxy cannot be reached, so the pin stands and deploy_vm writes the
    // working dir, then fails (the stand-in prints no provider schema).
    let job = c
        .provision_vm(user_id, on_backend("opentofu", Some(11)))
        .await
        .unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
    let name = format!("hero_u{user_id}_netleft");
    let dir = stack.server.data_dir().join("opentofu").join(&name);
    assert!(dir.join("desired.json").exists(), "{}", dir.display());
    let state = dir.join("terraform.tfstate");

    // Garbled state: the backend cannot say what runs, so nothing is forgotten without --force.
    std::fs::write(&state, "{\"version\": 4, \"resources\": [").unwrap();
    let err = c.forget_vm(user_id, false).await.unwrap_err();
    assert_eq!(refusal_code(&err), "vm.unconfirmed", "{err}");
    assert!(err.to_string().contains("terraform.tfstate"), "{err}");

    // Only the network: still there, named, and the way out is `vm delete`.
    std::fs::write(
        &state,
        r#"{"version": 4, "terraform_version": "1.8.0", "serial": 3, "outputs": {},
            "resources": [{"mode": "managed", "type": "grid_network", "name": "net",
                           "provider": "provider[\"registry.opentofu.org/threefoldtech/grid\"]",
                           "instances": []}]}"#,
    )
    .unwrap();
    let err = c.forget_vm(user_id, false).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Refused), "{err}");
    assert_eq!(refusal_code(&err), "vm.still_exists", "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "grid_network.net in the opentofu state of {name} on opentofu"
        )) && text.contains("vm delete"),
        "{text}"
    );
    assert!(c.get_vm(user_id).await.unwrap().vm.is_some());

    // A decommission destroys the working dir (init and destroy run), after which the record is
    // closed and nothing is left to forget.
    let job = c.decommission_vm(user_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    assert!(!dir.exists());
    assert!(c.get_vm(user_id).await.unwrap().vm.is_none());
    c.delete_user(user_id).await.unwrap();
}
