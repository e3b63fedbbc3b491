//! The provisioning pipeline end to end, against the real server binary, the real dev Forge, the
//! local backend (real sshd per sandbox, real HTTP gateway), driven through the SDK.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use hero_os_tfgrid_deployer_backends::compute::discard_output;
use hero_os_tfgrid_deployer_backends::{
    ComputeBackend, LocalBackend, LocalConfig, ResourceName, UserKeyPair, VmRequest, VmSpec,
};
use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::{ListEventsParams, VmStatus};
use hero_os_tfgrid_deployer_sdk::ErrorKind;
use hero_os_tfgrid_deployer_server::provision::steps::{DECOMMISSION_STEPS, PROVISION_STEPS};
use support::{all_bytes_under, contains};
use support_jobs::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_serves_health_through_the_gateway_and_decommission_leaves_nothing() {
    let (stack, _) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "alice").await;

    let job = c.provision_vm(user_id, None).await.unwrap();
    assert_eq!(job.kind, JobKind::Provision);
    assert_eq!(job.steps.len(), PROVISION_STEPS.len());
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{:?}\n{}",
        job.error,
        messages(&events)
    );
    assert!(job
        .steps
        .iter()
        .all(|s| s.state == StepState::Done && s.duration_ms.is_some()));
    let text = messages(&events);
    let n = PROVISION_STEPS.len();
    for (i, name) in PROVISION_STEPS.iter().enumerate() {
        assert!(
            text.contains(&format!("step {}/{n} {name}: done in", i + 1)),
            "{text}"
        );
    }
    assert!(
        text.contains("local backend"),
        "node selection explains the skip: {text}"
    );
    // The deadline shown and the retry policy agree: the start says both (FAST_CONFIG: 3).
    assert!(
        text.contains("step 1/12 forge_user: started (deadline 120 s, at most 3 attempts)"),
        "{text}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.level == EventLevel::Output && e.step.as_deref() == Some("run_bootstrap")),
        "bootstrap output is streamed into events"
    );
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "gapless sequence"
    );
    assert_steps_in_order(&events, PROVISION_STEPS);
    assert!(
        text.contains("ED25519 key") && text.contains("generated"),
        "a first VM makes the user's key: {text}"
    );

    // Replay after the end gives the same events, and says done at once.
    let replay = c.job_events(job.job_id, 0, 10_000).await.unwrap();
    assert!(replay.done);
    assert_eq!(replay.events.len(), events.len().min(500));

    let result = job.result.clone().unwrap();
    assert_eq!(
        result.url,
        format!("http://alice.localhost:{}/", url_port(&result.url))
    );
    assert_eq!(gateway_health(&result.url).await.unwrap(), 200);

    let details = c.get_vm(user_id).await.unwrap();
    let vm = details.vm.clone().unwrap();
    assert_eq!(vm.state, "ready");
    assert_eq!(vm.url.as_deref(), Some(result.url.as_str()));
    assert!(vm
        .host_key_fingerprint
        .as_deref()
        .unwrap()
        .starts_with("SHA256:"));
    assert_eq!(vm.ssh_key_fingerprint, details.ssh_key_fingerprint);
    assert_eq!(vm.deployer_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(vm.job_id, Some(job.job_id));
    assert!(vm.ready_at.is_some());
    assert_eq!(vm.spec["cpu"], 16);
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_status,
        VmStatus::Ready
    );

    // register_sso: exactly one OAuth app for this VM on Forge, for the public origin's callback,
    // owned by the admin account; its secret is only in the secret store.
    let sso_apps = forge_apps(&stack, "alice").await;
    assert_eq!(sso_apps.len(), 1, "{sso_apps:?}");
    assert_eq!(
        sso_apps[0]["redirect_uris"],
        serde_json::json!([format!("{}oauth/callback", result.url)])
    );
    assert_eq!(sso_apps[0]["confidential_client"], true);
    let client_secret = stored_client_secret(&stack, user_id).await.unwrap();
    assert!(
        client_secret_works(
            &stack,
            sso_apps[0]["client_id"].as_str().unwrap(),
            &client_secret
        )
        .await,
        "the stored secret is the app's current one"
    );

    // The URL is gated: verify_health proved it and says so in the result; an anonymous request
    // is sent to sign in, and the SSO edge on the sandbox sends it on to this Forge with this
    // VM's own client; /health stays public.
    let client_id = sso_apps[0]["client_id"].as_str().unwrap();
    let gate = result
        .gate
        .clone()
        .expect("the result says the URL is gated");
    assert_eq!(gate.client_id, client_id);
    assert_eq!(
        gate.sign_in_at,
        format!(
            "{}/login/oauth/authorize",
            stack.forge.url.trim_end_matches('/')
        )
    );
    assert_eq!(gate.health_url, format!("{}health", result.url));
    let (status, location) = gateway_get(&result.url, "/").await;
    assert_eq!(status, 302, "an anonymous GET / is not let through");
    let login = location.unwrap();
    assert!(login.starts_with("/oauth/login"), "{login}");
    let (status, location) = gateway_get(&result.url, &login).await;
    assert_eq!(status, 302);
    let authorize = reqwest::Url::parse(&location.unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q.get("client_id").map(String::as_str), Some(client_id));
    assert_eq!(
        q.get("redirect_uri").cloned(),
        Some(format!("{}oauth/callback", result.url))
    );
    for path in ["/cockpit", "/api/repos", "/health/../", "/%2e/"] {
        let (status, _) = gateway_get(&result.url, path).await;
        assert!(
            status == 302 || status == 400,
            "{path}: {status} without a session"
        );
    }
    // What configure_sso wrote: the VM's store (the sandbox's, here) names the owner and the client.
    let vm_store = hero_secrets::FileSecretStore::open(
        &sandbox_dir(&stack, &format!("hero_u{user_id}_alice")).join("secrets"),
    )
    .unwrap();
    let get = |slot: &'static str| {
        let store = &vm_store;
        async move {
            use hero_secrets::SecretStore as _;
            store
                .get(slot)
                .await
                .unwrap()
                .map(|v| v.expose().to_owned())
        }
    };
    assert_eq!(get("cockpit/FORGE_OWNER").await.as_deref(), Some("alice"));
    assert_eq!(
        get("cockpit/FORGE_OAUTH_CLIENT_ID").await.as_deref(),
        Some(client_id)
    );
    assert_eq!(
        get("cockpit/FORGE_OAUTH_CLIENT_SECRET").await.as_deref(),
        Some(client_secret.as_str())
    );

    // A second provision for a ready VM is refused with the reason.
    let err = c.provision_vm(user_id, None).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::FailedPrecondition), "{err}");

    // The operator can export the key (audited); it is nowhere at rest in plaintext.
    let key = c.export_ssh_key(user_id).await.unwrap();
    assert!(key
        .private_key
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert_eq!(
        UserKeyPair::from_private_openssh(&key.private_key)
            .unwrap()
            .fingerprint(),
        key.fingerprint
    );
    // PEM lines that carry key material: those no other ED25519 key shares (some lines are a
    // format header common to every key).
    let other = UserKeyPair::generate(&mut rand::rngs::OsRng, "other").unwrap();
    let common: Vec<&str> = other.private_openssh().lines().collect();
    let secret_lines: Vec<&str> = key
        .private_key
        .lines()
        .filter(|l| !l.starts_with("-----") && !common.contains(l))
        .collect();
    assert!(secret_lines.len() >= 3);
    let log = stack.server.log_text();
    for (path, bytes) in all_bytes_under(&stack.server.data_dir()) {
        for l in &secret_lines {
            assert!(
                !contains(&bytes, l),
                "private key in plaintext in {}",
                path.display()
            );
        }
    }
    for l in &secret_lines {
        assert!(!log.contains(l), "private key in the server log");
    }
    // The OAuth client secret: only in the (encrypted) secret stores, never in sqlite or the log.
    // The sandbox (the VM's store, its edge's config and logs) is under the data dir too.
    for (path, bytes) in all_bytes_under(&stack.server.data_dir()) {
        assert!(
            !contains(&bytes, &client_secret),
            "client secret in plaintext in {}",
            path.display()
        );
    }
    assert!(
        !log.contains(&client_secret),
        "client secret in the server log"
    );
    let audit = c
        .list_events(&ListEventsParams {
            action: Some("ssh_key.export".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.events.len(), 1);

    let name = vm.name.clone();
    let dir = sandbox_dir(&stack, &name);
    let (ssh_port, web_port) = sandbox_ports(&dir);
    assert!(port_open(ssh_port) && port_open(web_port));
    assert!(!processes_mentioning(&format!("{}/", dir.display())).is_empty());

    let job = c.decommission_vm(user_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{:?}\n{}",
        job.error,
        messages(&events)
    );
    assert!(messages(&events).contains("step 4/4 mark_decommissioned: done"));
    assert!(
        forge_apps(&stack, "alice").await.is_empty(),
        "decommission deletes the VM's OAuth app"
    );
    assert_eq!(stored_client_secret(&stack, user_id).await, None);

    // Nothing left: no process, no port, no directory, no route.
    assert!(processes_mentioning(&format!("{}/", dir.display())).is_empty());
    assert!(!port_open(ssh_port) && !port_open(web_port));
    assert!(!dir.exists());
    assert!(routes(&stack).is_empty());
    assert_ne!(gateway_health(&result.url).await.ok(), Some(200));
    let details = c.get_vm(user_id).await.unwrap();
    assert!(details.vm.is_none());
    assert_eq!(details.history.len(), 1);
    assert_eq!(details.history[0].state, "decommissioned");
    assert!(details.history[0].decommissioned_at.is_some());
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_status,
        VmStatus::Decommissioned
    );
    let report = c.reconcile(false).await.unwrap();
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );

    // Decommissioning again: nothing to do, said clearly.
    let err = c.decommission_vm(user_id).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::FailedPrecondition), "{err}");

    // A second VM for the same user: the job starts knowing the user's key, so its ssh_key
    // step adopts it at once: one record and one "done" event for its start and end.
    let job = c.provision_vm(user_id, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    assert_steps_in_order(&events, PROVISION_STEPS);
    let text = messages(&events);
    assert!(
        text.contains(&format!(
            "existing ED25519 key {} adopted (found when the job was created)",
            details.ssh_key_fingerprint.clone().unwrap()
        )),
        "{text}"
    );
    assert_eq!(gateway_health(&job.result.unwrap().url).await.unwrap(), 200);
    let job = c.decommission_vm(user_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    assert_steps_in_order(&events, DECOMMISSION_STEPS);
    assert!(sandboxes(&stack).is_empty() && routes(&stack).is_empty());
}

fn url_port(url: &str) -> u16 {
    reqwest::Url::parse(url).unwrap().port().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_node_on_the_local_backend_is_refused_not_shown() {
    let (stack, _) = stack(Vec::new()).await;
    let c = stack.client();
    let user_id = new_user(c, "pinned").await;
    for node in [7, 0, u32::MAX] {
        let options = ProvisionOptions {
            node_id: Some(node),
            ..Default::default()
        };
        let err = c.provision_vm(user_id, Some(options)).await.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::InvalidParams), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "node {node} cannot be used with the local backend"
            )),
            "{err}"
        );
    }
    // Nothing was made: no job, no VM row.
    let jobs = c
        .list_jobs(&ListJobsParams {
            user_id: Some(user_id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(jobs.jobs.is_empty());
    assert!(c.get_vm(user_id).await.unwrap().vm.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_provisions_for_one_user_make_one_job() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (stack, _) = stack(vec![(
        "HERO_DEPLOYER_TCP_LISTEN".to_owned(),
        tcp.to_string(),
    )])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "bob").await;
    let (a, b) = tokio::join!(c.provision_vm(user_id, None), c.provision_vm(user_id, None));
    let (ok, err) = match (a, b) {
        (Ok(j), Err(e)) | (Err(e), Ok(j)) => (j, e),
        other => panic!("expected exactly one job: {other:?}"),
    };
    assert_eq!(err.kind(), Some(ErrorKind::JobConflict));
    assert!(
        err.to_string().contains(&format!("job {}", ok.job_id)),
        "{err}"
    );
    let jobs = c
        .list_jobs(&ListJobsParams {
            user_id: Some(user_id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.jobs.len(), 1);
    let (job, _) = follow(c, ok.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert_eq!(sandboxes(&stack).len(), 1);
    assert_eq!(routes(&stack).len(), 1);
    // Over TCP (behind the SSO edge) the VM facts are readable, the private key is not.
    let remote = hero_os_tfgrid_deployer_sdk::Client::new(
        hero_os_tfgrid_deployer_sdk::Endpoint::Tcp(tcp.to_string()),
    )
    .acting_as("admin")
    .unwrap();
    assert!(remote.get_vm(user_id).await.unwrap().vm.is_some());
    let err = remote.export_ssh_key(user_id).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Forbidden), "{err}");
    let job = c.decommission_vm(user_id).await.unwrap();
    assert_eq!(follow(c, job.job_id).await.0.state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_and_removes_an_orphan_made_behind_the_deployers_back() {
    let (stack, _) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    // A sandbox the deployer never recorded, in its own backend root.
    let mut cfg = LocalConfig::new(local_root(&stack));
    cfg.gateway_listen = "127.0.0.1:0".parse().unwrap();
    let rogue = LocalBackend::start(cfg).await.unwrap();
    let name = ResourceName::new(999, "ghost").unwrap();
    let key = UserKeyPair::generate(&mut rand::rngs::OsRng, "ghost").unwrap();
    rogue
        .deploy_vm(
            &VmRequest {
                name: name.clone(),
                spec: VmSpec::default(),
                ssh_public_key: key.public_openssh().to_owned(),
                node_id: None,
            },
            discard_output(),
        )
        .await
        .unwrap();
    let dir = sandbox_dir(&stack, &name.to_string());
    assert!(dir.exists());

    let report = c.reconcile(false).await.unwrap();
    assert_eq!(report.orphans.len(), 1, "{report:?}");
    assert_eq!(report.orphans[0].name, "hero_u999_ghost");
    assert_eq!(report.orphans[0].user_id, Some(999));
    assert!(report.removed.is_empty());
    assert!(dir.exists(), "report only does not touch anything");

    let report = c.reconcile(true).await.unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(!dir.exists());
    assert!(processes_mentioning(&format!("{}/", dir.display())).is_empty());
    let audit = c
        .list_events(&ListEventsParams {
            action: Some("reconcile.remove_orphan".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.events.len(), 1);
    assert_eq!(audit.events[0].subject, "vm:hero_u999_ghost");
    let report = c.reconcile(false).await.unwrap();
    assert!(report.orphans.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_missing_a_prerequisite_is_refused_at_job_creation_with_what_to_do() {
    // No mnemonic in the store, no hero_compute socket: both are refused at once, before a job,
    // a VM row or a gridproxy request exists (no node is pinned: a job would have gone to
    // gridproxy, which tests cannot reach, and retried).
    let (stack, _) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "gridy").await;
    for (backend, words) in [
        (
            "opentofu",
            &["no TFGrid mnemonic", "secret set deployer/tfgrid_mnemonic"][..],
        ),
        ("hero_compute", &["hero_compute backend: no socket at"][..]),
    ] {
        let err = c
            .provision_vm(user_id, on_backend(backend, None))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::FailedPrecondition), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("the {backend} backend cannot provision")),
            "{text}"
        );
        for w in words {
            assert!(text.contains(w), "{w:?} missing in {text}");
        }
    }
    let jobs = c.list_jobs(&ListJobsParams::default()).await.unwrap();
    assert!(jobs.jobs.is_empty(), "no job was created: {:?}", jobs.jobs);
    let vm = c.get_vm(user_id).await;
    assert!(
        vm.as_ref().map_or(true, |v| v.vm.is_none()),
        "no VM row was written: {vm:?}"
    );
    assert_eq!(c.get_user(user_id).await.unwrap().vm_status, VmStatus::NoVm);
    let err = c
        .provision_vm(
            user_id,
            Some(ProvisionOptions {
                backend: Some("nope".into()),
                profile: None,
                node_id: None,
                expires_in_days: None,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::FailedPrecondition), "{err}");
}

/// Reconcile knows the VMs' OAuth apps (issue 11 item 5): an app this deployer made without a
/// live VM is an orphan that `fix` deletes (here: a decommission that could not reach Forge, a
/// real stall of the dev Forge's process, left one); a live VM whose app vanished is missing; an
/// app it did not make is never touched, whatever its name — one named like its own
/// (`hero_u999_ghost`) is what a second deployer on the same Forge account makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_oauth_apps_without_a_vm_and_vms_without_an_app() {
    let config = format!("{FAST_CONFIG}\n[forge]\ntimeout_secs = 2\nattempts = 1\n");
    let (stack, _) = stack_with(config, Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let http = reqwest::Client::new();
    let admin = format!("token {}", stack.forge.admin_token());
    let make = |name: &'static str| {
        let req = http
            .post(format!("{}/api/v1/user/applications/oauth2", stack.forge.url))
            .header("Authorization", &admin)
            .json(&serde_json::json!({"name": name, "redirect_uris": ["https://x.example/oauth/callback"], "confidential_client": true}));
        async move { assert_eq!(req.send().await.unwrap().status(), 201) }
    };
    make("hero_os_tfgrid_deployer hero_u999_ghost").await;
    make("someone else's app").await;
    make("hero_os_tfgrid_deployer not-a-resource-name").await;
    // A live VM whose app is then deleted behind the deployer's back.
    let user_id = new_user(c, "vera").await;
    let job = c.provision_vm(user_id, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    let vera = forge_apps(&stack, "vera").await;
    assert_eq!(vera.len(), 1);
    // A VM decommissioned while Forge did not answer: its app is left behind, an orphan.
    let wes = new_user(c, "wes").await;
    let job = c.provision_vm(wes, None).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    let forge_pid = stack.forge.guard.child.id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, forge_pid.as_str()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let job = c.decommission_vm(wes).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    signal("-CONT");
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    assert!(
        messages(&events).contains("Forge unreachable"),
        "{}",
        messages(&events)
    );
    assert_eq!(forge_apps(&stack, "wes").await.len(), 1, "left on Forge");

    let report = c.reconcile(false).await.unwrap();
    let apps = |v: &[ResourceRef]| -> Vec<String> {
        v.iter()
            .filter(|r| r.kind == "oauth_app")
            .map(|r| r.name.clone())
            .collect()
    };
    assert_eq!(
        apps(&report.orphans),
        [format!("hero_u{wes}_wes")],
        "{report:?}"
    );
    assert!(apps(&report.missing).is_empty(), "{report:?}");

    let r = http
        .delete(format!(
            "{}/api/v1/user/applications/oauth2/{}",
            stack.forge.url, vera[0]["id"]
        ))
        .header("Authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let report = c.reconcile(true).await.unwrap();
    assert_eq!(
        apps(&report.removed),
        [format!("hero_u{wes}_wes")],
        "{report:?}"
    );
    assert_eq!(
        apps(&report.missing),
        [format!("hero_u{user_id}_vera")],
        "{report:?}"
    );
    let left: Vec<serde_json::Value> = http
        .get(format!(
            "{}/api/v1/user/applications/oauth2",
            stack.forge.url
        ))
        .header("Authorization", &admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<&str> = left.iter().map(|a| a["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "hero_os_tfgrid_deployer hero_u999_ghost",
            "hero_os_tfgrid_deployer not-a-resource-name",
            "someone else's app",
        ],
        "apps the deployer did not make are never touched"
    );
}

/// Two deployers on one Forge admin account (production beside staging) each number their users
/// from 1, so each names an app `hero_os_tfgrid_deployer hero_u1_<name>`. Before, `reconcile
/// --fix` on one took the other's live app for an orphan of its own (no live VM of that name
/// here) and deleted it, and with it the client secret of its own user 1: two VMs lost their
/// sign-in. Now each touches only the apps it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployers_on_one_forge_account_never_touch_each_others_apps() {
    let (a, _) = stack(Vec::new()).await;
    let _reaper_a = SandboxReaper(local_root(&a));
    let dir_b = tempfile::tempdir().unwrap();
    let config_b = dir_b.path().join("deployer.toml");
    std::fs::write(&config_b, FAST_CONFIG).unwrap();
    let b = support::Server::start(
        dir_b.path(),
        support::ServerOptions {
            forge_url: a.forge.url.clone(),
            extra_env: vec![(
                "HERO_DEPLOYER_CONFIG".to_owned(),
                config_b.display().to_string(),
            )],
        },
    );
    b.set_admin_token(&a.forge.admin_token()).await;
    let _reaper_b = SandboxReaper(b.data_dir().join("local"));
    let mut ids = Vec::new();
    for (c, name) in [(a.client(), "alice"), (&b.client, "bob")] {
        let user_id = new_user(c, name).await;
        let job = c.provision_vm(user_id, None).await.unwrap();
        let (job, events) = follow(c, job.job_id).await;
        assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
        ids.push(user_id);
    }
    assert_eq!(ids, [1, 1], "both number their users from 1");
    let alice_secret = stored_client_secret(&a, 1).await.unwrap();
    for c in [a.client(), &b.client] {
        let report = c.reconcile(true).await.unwrap();
        assert!(
            report.orphans.is_empty() && report.removed.is_empty() && report.missing.is_empty(),
            "{report:?}"
        );
    }
    assert_eq!(forge_apps(&a, "alice").await.len(), 1);
    assert_eq!(
        forge_apps(&a, "bob").await.len(),
        1,
        "the other deployer's app is left"
    );
    assert_eq!(
        stored_client_secret(&a, 1).await.as_deref(),
        Some(alice_secret.as_str())
    );
    // A decommission deletes its own app only.
    let job = b.client.decommission_vm(1).await.unwrap();
    let (job, events) = follow(&b.client, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    assert!(forge_apps(&a, "bob").await.is_empty());
    assert_eq!(forge_apps(&a, "alice").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_never_reached_its_backend_leaves_no_dead_end() {
    use hero_os_tfgrid_deployer_sdk::methods::SecretDelete;
    use hero_os_tfgrid_deployer_sdk::types::SecretSlotParams;
    // The opentofu backend's prerequisites hold when the job is made (a mnemonic, an
    // executable "tofu"); gridproxy cannot be reached, so the job fails at select_node, before
    // the backend is ever asked. Then the mnemonic is removed: the backend is unconfigured.
    let stack = grid_stack("http://127.0.0.1:1").await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "gridy").await;
    let slot = MNEMONIC_SLOT.to_owned();
    let job = c
        .provision_vm(user_id, on_backend("opentofu", None))
        .await
        .unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{}", messages(&events));
    assert!(
        job.error
            .as_deref()
            .unwrap_or_default()
            .contains("select_node"),
        "{:?}",
        job.error
    );
    c.call::<SecretDelete>(&SecretSlotParams { slot })
        .await
        .unwrap();

    // reconcile: the unconfigured backend is named and skipped; the others are compared.
    let report = c.reconcile(false).await.unwrap();
    assert!(report.checked.contains(&"local".to_owned()), "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].backend, "opentofu");
    assert!(
        report.skipped[0].reason.contains("no TFGrid mnemonic"),
        "{report:?}"
    );

    // decommission needs no backend for a record it never reached, and the user can go.
    let job = c.decommission_vm(user_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    let text = messages(&events);
    assert_eq!(job.state, JobState::Succeeded, "{:?}\n{text}", job.error);
    assert!(
        text.contains("never reached the opentofu backend"),
        "{text}"
    );
    let vm = c.get_vm(user_id).await.unwrap();
    assert!(vm.vm.is_none(), "{vm:?}");
    assert!(vm.history.iter().all(|v| v.state == "decommissioned"));
    c.delete_user(user_id).await.unwrap();
}

/// A user with VM records on two backends (an attempt on the grid that failed, then a VM on this machine): a
/// decommission deletes on one backend and marks only that backend's records. Before, it marked every record
/// decommissioned, and one on the other backend — whose VM may still run — vanished from reconcile's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommission_marks_only_its_own_backends_records() {
    let stack = grid_stack("http://127.0.0.1:1").await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let user_id = new_user(c, "twoback").await;
    let on = |backend: &str| on_backend(backend, None);
    let grid = c.provision_vm(user_id, on("opentofu")).await.unwrap();
    assert_eq!(follow(c, grid.job_id).await.0.state, JobState::Failed);
    let local = c.provision_vm(user_id, on("local")).await.unwrap();
    let (local, events) = follow(c, local.job_id).await;
    assert_eq!(local.state, JobState::Succeeded, "{}", messages(&events));

    let job = c.decommission_vm(user_id).await.unwrap();
    assert_eq!(follow(c, job.job_id).await.0.state, JobState::Succeeded);
    let vm = c.get_vm(user_id).await.unwrap();
    let left = vm.vm.expect("the grid attempt's record is still live");
    assert_eq!(left.backend, "opentofu");
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_status,
        VmStatus::Failed
    );
    assert!(vm
        .history
        .iter()
        .any(|v| v.backend == "local" && v.state == "decommissioned"));
    let audit = c
        .list_events(&hero_os_tfgrid_deployer_sdk::types::ListEventsParams::default())
        .await
        .unwrap();
    assert!(
        audit.events.iter().any(|e| e
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("on the opentofu backend remains")),
        "{audit:?}"
    );

    // The second decommission goes to the grid record (which never reached its backend) and ends it.
    let job = c.decommission_vm(user_id).await.unwrap();
    let (job, events) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
    assert!(c.get_vm(user_id).await.unwrap().vm.is_none());
    assert_eq!(
        c.get_user(user_id).await.unwrap().vm_status,
        VmStatus::Decommissioned
    );
}
