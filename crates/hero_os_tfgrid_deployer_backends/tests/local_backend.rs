//! The local backend end to end: real sshd sandboxes, real reverse proxy, real bootstrap.
//! deploy → ssh → upload manifest + bootstrap → GET /health 200 through the gateway → delete →
//! no process, no port, no directory, no route.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{user_key, SandboxReaper};
use hero_os_tfgrid_deployer_backends::compute::discard_output;
use hero_os_tfgrid_deployer_backends::process::{pid_alive, read_pid_file};
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, LocalBackend, LocalConfig,
    OutputSink, ResourceKind, ResourceName, SshClient, UserKeyPair, VmRequest, VmSecretStore,
    VmSpec, DEFAULT_BOOTSTRAP_SCRIPT,
};
use hero_secrets::slots;

async fn backend(root: &std::path::Path) -> LocalBackend {
    let mut cfg = LocalConfig::new(root);
    cfg.gateway_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    LocalBackend::start(cfg).await.unwrap()
}

/// A default VM request for `name`, reached with `key`.
fn request(name: &ResourceName, key: &UserKeyPair) -> VmRequest {
    VmRequest {
        name: name.clone(),
        spec: VmSpec::default(),
        ssh_public_key: key.public_openssh().to_string(),
        node_id: None,
    }
}

fn collect() -> (OutputSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    (
        Arc::new(move |s: &str| l.lock().unwrap().push(s.to_string())),
        lines,
    )
}

async fn get_via_gateway(gw: &GatewayInfo, path: &str) -> (u16, String) {
    let addr: SocketAddr = gw.connect_addr.as_ref().unwrap().parse().unwrap();
    let client = reqwest::Client::builder()
        .resolve(&gw.fqdn, addr)
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("{}{}", gw.url.trim_end_matches('/'), path);
    let resp = client.get(&url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn port_listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn full_lifecycle_through_the_gateway_and_nothing_left() {
    let root = tempfile::tempdir().unwrap();
    let _reaper = SandboxReaper {
        root: root.path().to_path_buf(),
    };
    let be = backend(root.path()).await;
    let key = user_key(10);
    let name = ResourceName::new(7, "alice").unwrap();
    let req = request(&name, &key);
    assert!(be.get_vm(&name).await.unwrap().is_none());
    let (out, lines) = collect();
    let vm = be.deploy_vm(&req, out).await.unwrap();
    assert!(lines.lock().unwrap().iter().any(|l| l.contains("ready")));
    assert_eq!(vm.ssh.host, "127.0.0.1");
    let sshd_pid = read_pid_file(&be.sandbox_dir(&name).join("sshd/sshd.pid")).unwrap();
    assert!(pid_alive(sshd_pid));

    // Idempotent: a second deploy adopts the same sandbox.
    let again = be.deploy_vm(&req, discard_output()).await.unwrap();
    assert_eq!(again, vm);
    assert_eq!(
        read_pid_file(&be.sandbox_dir(&name).join("sshd/sshd.pid")).unwrap(),
        sshd_pid
    );

    // SSH with the user's key; pin on first contact.
    let client = SshClient::new(vm.ssh.clone(), key.private_openssh(), None).unwrap();
    let session = client
        .wait_until_ready(
            tokio::time::Instant::now() + Duration::from_secs(20),
            Duration::from_millis(50),
            |_, _| {},
        )
        .await
        .unwrap();
    let pinned = session.host_fingerprint().to_string();
    // The bootstrap's edge serves the public URL the manifest names (`push_manifest` writes it).
    let manifest = format!(
        "[user]\nurl = \"http://alice.localhost:{}/\"\n",
        be.gateway_addr().port()
    );
    session
        .upload(&vm.manifest_path, manifest.as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&vm.manifest_path).unwrap(),
        manifest
    );
    // What `configure_sso` pushes before the bootstrap: the edge's client, issuer and who may sign in,
    // each value on stdin into the sandbox's store (the `VmSecretStore::ProxyFiles` kind).
    assert_eq!(vm.secret_store, VmSecretStore::ProxyFiles);
    for (slot, value) in [
        (slots::COCKPIT_OAUTH_ISSUER, "http://127.0.0.1:9/"),
        (slots::COCKPIT_OAUTH_CLIENT_ID, "client-alice"),
        (slots::COCKPIT_OAUTH_CLIENT_SECRET, "secret-alice"),
        (slots::COCKPIT_FORGE_OWNER, "alice"),
        (slots::ADMIN_FORGE_USERS, ","),
    ] {
        let cmd = vm.wrap_command(&format!(
            "\"$HERO_BIN_DIR/hero_proxy\" secret set --secrets-dir \"$HERO_SECRETS_DIR\" {slot}"
        ));
        let mut out = Vec::new();
        let status = session
            .run_with_stdin(&cmd, Some(value.as_bytes()), |l| out.push(l.text))
            .await
            .unwrap();
        assert!(status.success(), "{slot}: {out:?}");
    }
    session
        .upload(
            &vm.bootstrap_path(),
            DEFAULT_BOOTSTRAP_SCRIPT.as_bytes(),
            Some(0o755),
        )
        .await
        .unwrap();
    let mut boot = Vec::new();
    let status = session
        .run(&vm.bootstrap_command(), |l| boot.push(l.text))
        .await
        .unwrap();
    assert!(status.success(), "bootstrap failed: {boot:?}");
    assert!(boot.iter().any(|l| l.contains("listening")), "{boot:?}");
    // Re-running the bootstrap is fine (replaces the server).
    let status = session.run(&vm.bootstrap_command(), |_| {}).await.unwrap();
    assert!(status.success());
    session.close().await;
    // The sandbox's perimeter is up: this workspace's hero_proxy in front of the cockpit stand-in.
    let perimeter_pids: Vec<u32> = ["pids/hero_proxy.pid", "pids/cockpit.pid"]
        .iter()
        .map(|f| read_pid_file(&be.sandbox_dir(&name).join(f)).unwrap())
        .collect();
    assert!(
        perimeter_pids.iter().all(|p| pid_alive(*p)),
        "{perimeter_pids:?}"
    );
    let web_port: u16 = vm
        .web_backend_url
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let gw_req = GatewayRequest {
        name: name.clone(),
        host_label: "alice".into(),
        backend_url: vm.web_backend_url.clone(),
        node_id: None,
    };
    let gw = be.deploy_gateway(&gw_req, discard_output()).await.unwrap();
    assert_eq!(gw.fqdn, "alice.localhost");
    assert_eq!(
        gw.url,
        format!("http://alice.localhost:{}/", be.gateway_addr().port())
    );
    assert_eq!(
        be.deploy_gateway(&gw_req, discard_output()).await.unwrap(),
        gw
    );
    assert_eq!(be.get_gateway(&name).await.unwrap(), Some(gw.clone()));
    let (status, body) = get_via_gateway(&gw, "/health").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Everything else is the owner's: an anonymous request is sent to sign in, never served.
    let addr: SocketAddr = gw.connect_addr.as_ref().unwrap().parse().unwrap();
    let no_follow = reqwest::Client::builder()
        .resolve(&gw.fqdn, addr)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // (`/%2e%2e/health` is `/health` once normalised, so it is the public probe; `/health/x/../..`
    // is `/`, the owner's.)
    for (path, public) in [
        ("/", false),
        ("/repos", false),
        ("/healthz", false),
        ("/%2e%2e/health", true),
        ("/health/x/%2e%2e/%2e%2e", false),
    ] {
        let resp = no_follow
            .get(format!("{}{}", gw.url.trim_end_matches('/'), path))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        if public {
            assert_eq!((status, body.as_str()), (200, "ok\n"), "{path}");
        } else {
            assert_ne!(status, 200, "{path} served without a session: {body}");
        }
    }

    // Another user cannot take the label.
    let bob = ResourceName::new(8, "bob").unwrap();
    let err = be
        .deploy_gateway(
            &GatewayRequest {
                name: bob,
                ..gw_req.clone()
            },
            discard_output(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NameTaken { .. }), "{err}");

    // Inventory shows both, with the user id.
    let inv = be.inventory().await.unwrap();
    assert_eq!(inv.len(), 2);
    assert!(inv
        .iter()
        .all(|r| r.name.as_ref().map(|n| n.user_id()) == Some(7)));
    assert!(inv.iter().any(|r| r.kind == ResourceKind::Gateway));

    // The host key is stable across get_vm.
    let vm2 = be.get_vm(&name).await.unwrap().unwrap();
    let s = SshClient::new(vm2.ssh, key.private_openssh(), Some(pinned))
        .unwrap()
        .connect()
        .await
        .unwrap();
    s.close().await;

    // Decommission in reverse.
    be.delete_gateway(&name, discard_output()).await.unwrap();
    be.delete_gateway(&name, discard_output()).await.unwrap();
    assert!(be.get_gateway(&name).await.unwrap().is_none());
    let (status, _) = get_via_gateway(&gw, "/health").await;
    assert_eq!(status, 404);
    let ssh_port = vm.ssh.port;
    be.delete_vm(&name, discard_output()).await.unwrap();
    assert!(!pid_alive(sshd_pid), "sshd still alive");
    assert!(
        perimeter_pids.iter().all(|p| !pid_alive(*p)),
        "perimeter still alive: {perimeter_pids:?}"
    );
    assert!(!port_listening(ssh_port), "ssh port still listening");
    assert!(!port_listening(web_port), "web port still listening");
    assert!(!be.sandbox_dir(&name).exists());
    let routes = std::fs::read_to_string(root.path().join("gateway/routes.json")).unwrap();
    assert!(!routes.contains("hero_u7_alice"), "{routes}");
    assert!(be.inventory().await.unwrap().is_empty());
    be.delete_vm(&name, discard_output()).await.unwrap();
    assert!(be.get_vm(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn survives_a_restart_and_restarts_a_dead_sshd() {
    let root = tempfile::tempdir().unwrap();
    let _reaper = SandboxReaper {
        root: root.path().to_path_buf(),
    };
    let key = user_key(11);
    let name = ResourceName::new(9, "carol").unwrap();
    let req = request(&name, &key);
    let (vm, pid, gw_before) = {
        let be = backend(root.path()).await;
        let vm = be.deploy_vm(&req, discard_output()).await.unwrap();
        let gw = be
            .deploy_gateway(
                &GatewayRequest {
                    name: name.clone(),
                    host_label: "carol".into(),
                    backend_url: vm.web_backend_url.clone(),
                    node_id: None,
                },
                discard_output(),
            )
            .await
            .unwrap();
        let pid = read_pid_file(&be.sandbox_dir(&name).join("sshd/sshd.pid")).unwrap();
        (vm, pid, gw)
        // The backend (and its gateway task) is dropped here: a deployer restart.
    };
    assert!(pid_alive(pid), "sshd survives the backend");
    let be = backend(root.path()).await;
    let adopted = be.get_vm(&name).await.unwrap().unwrap();
    assert_eq!(adopted, vm);
    assert_eq!(
        read_pid_file(&be.sandbox_dir(&name).join("sshd/sshd.pid")).unwrap(),
        pid
    );
    let gw = be
        .get_gateway(&name)
        .await
        .unwrap()
        .expect("route persisted");
    assert_eq!(gw.fqdn, "carol.localhost");
    // On a port the OS chose, the gateway asks for the same port again: the public URL (and the
    // OAuth callback made for it) does not move with a restart.
    assert_eq!(gw.url, gw_before.url);

    // A dead sshd (SSH refused) is restarted by get_vm.
    assert!(be.stop_sshd(&name).await);
    assert!(!pid_alive(pid));
    let c = SshClient::new(vm.ssh.clone(), key.private_openssh(), None).unwrap();
    let err = c.connect().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let vm3 = be.get_vm(&name).await.unwrap().unwrap();
    let new_pid = read_pid_file(&be.sandbox_dir(&name).join("sshd/sshd.pid")).unwrap();
    assert_ne!(new_pid, pid);
    assert!(pid_alive(new_pid));
    let s = SshClient::new(vm3.ssh, key.private_openssh(), None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    s.close().await;

    be.delete_gateway(&name, discard_output()).await.unwrap();
    be.delete_vm(&name, discard_output()).await.unwrap();
    assert!(!pid_alive(new_pid));
}

#[tokio::test]
async fn fault_hooks() {
    let root = tempfile::tempdir().unwrap();
    let _reaper = SandboxReaper {
        root: root.path().to_path_buf(),
    };
    let be = backend(root.path()).await;
    let faults = be.faults();
    let key = user_key(12);
    let name = ResourceName::new(3, "dave").unwrap();
    let req = request(&name, &key);
    faults.deploy_vm_timeouts.store(1, Ordering::SeqCst);
    faults.deploy_vm_unavailable.store(1, Ordering::SeqCst);
    let e1 = be.deploy_vm(&req, discard_output()).await.unwrap_err();
    assert_eq!(e1.code(), "backend.timeout");
    assert!(e1.is_transient());
    let e2 = be.deploy_vm(&req, discard_output()).await.unwrap_err();
    assert_eq!(e2.code(), "backend.unavailable");
    assert!(
        be.get_vm(&name).await.unwrap().is_none(),
        "faults create nothing"
    );
    let vm = be.deploy_vm(&req, discard_output()).await.unwrap();

    let gw_req = GatewayRequest {
        name: name.clone(),
        host_label: "dave".into(),
        backend_url: vm.web_backend_url.clone(),
        node_id: None,
    };
    faults.deploy_gateway_unavailable.store(1, Ordering::SeqCst);
    assert!(be
        .deploy_gateway(&gw_req, discard_output())
        .await
        .unwrap_err()
        .is_transient());
    let gw = be.deploy_gateway(&gw_req, discard_output()).await.unwrap();
    // Nothing listens on the web port yet: 502 from the proxy.
    assert_eq!(get_via_gateway(&gw, "/health").await.0, 502);
    faults.health_503.store(true, Ordering::SeqCst);
    assert_eq!(get_via_gateway(&gw, "/health").await.0, 503);
    faults.health_503.store(false, Ordering::SeqCst);

    // A bootstrap that exits 1 is reported as such (the orchestrator's "bootstrap failed").
    let s = SshClient::new(vm.ssh.clone(), key.private_openssh(), None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    s.upload(&vm.bootstrap_path(), b"echo failing >&2; exit 1\n", None)
        .await
        .unwrap();
    let st = s.run(&vm.bootstrap_command(), |_| {}).await.unwrap();
    assert_eq!(st.code, Some(1));
    s.close().await;

    be.delete_gateway(&name, discard_output()).await.unwrap();
    be.delete_vm(&name, discard_output()).await.unwrap();
}

/// A sandbox whose record cannot be read is an error, and stays as it is: a deploy took it for an interrupted
/// attempt and removed it, the user's home and secrets with it.
#[tokio::test]
async fn an_unreadable_record_is_an_error_and_the_sandbox_stays() {
    let root = tempfile::tempdir().unwrap();
    let _reaper = SandboxReaper {
        root: root.path().to_path_buf(),
    };
    let key = user_key(12);
    let name = ResourceName::new(10, "dora").unwrap();
    let req = request(&name, &key);
    let be = backend(root.path()).await;
    be.deploy_vm(&req, discard_output()).await.unwrap();
    let dir = be.sandbox_dir(&name);
    let keep = dir.join("home/hero/notes.txt");
    std::fs::write(&keep, "the user's own file").unwrap();
    std::fs::write(
        dir.join("sandbox.json"),
        "{\"name\": \"u10_dora\", \"ssh_po",
    )
    .unwrap();
    for (what, err) in [
        (
            "deploy",
            be.deploy_vm(&req, discard_output()).await.unwrap_err(),
        ),
        ("get", be.get_vm(&name).await.unwrap_err()),
    ] {
        assert!(err.to_string().contains("sandbox.json"), "{what}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(&keep).unwrap(),
        "the user's own file"
    );
}

/// A delete that stopped after setting the record aside (its processes would not die, or the deployer died) leaves
/// the sandbox dir without `sandbox.json`: `get_vm` is `None`, yet the sandbox's sshd may still run. `remains`
/// names the dir, so `vm forget` refuses; a second `delete_vm` finishes the job.
#[tokio::test]
async fn an_unfinished_delete_remains_until_deleted_again() {
    let root = tempfile::tempdir().unwrap();
    let _reaper = SandboxReaper {
        root: root.path().to_path_buf(),
    };
    let key = user_key(13);
    let name = ResourceName::new(11, "edna").unwrap();
    let req = request(&name, &key);
    let be = backend(root.path()).await;
    assert!(be.remains(&name).await.unwrap().is_empty());
    be.deploy_vm(&req, discard_output()).await.unwrap();
    assert!(
        be.remains(&name).await.unwrap().is_empty(),
        "a live sandbox is get_vm's"
    );
    let dir = be.sandbox_dir(&name);
    std::fs::rename(dir.join("sandbox.json"), dir.join("sandbox.json.deleting")).unwrap();
    assert!(be.get_vm(&name).await.unwrap().is_none());
    let left = be.remains(&name).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].contains(&dir.display().to_string()) && left[0].contains("unfinished delete"),
        "{left:?}"
    );
    be.delete_vm(&name, discard_output()).await.unwrap();
    assert!(!dir.exists());
    assert!(be.remains(&name).await.unwrap().is_empty());
}
