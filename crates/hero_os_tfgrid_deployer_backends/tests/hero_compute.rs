//! hero_compute client against an in-test STAND-IN server (not hero_compute): JSON-RPC 2.0 over
//! HTTP on a unix socket, serving an `rpc.discover` document and the ASSUMED method shapes of
//! `src/hero_compute/assumed.rs`. It checks the client's protocol handling and the missing-method
//! refusal; it cannot check the shapes against the real hero_compute (unpublished).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use hero_os_tfgrid_deployer_backends::compute::discard_output;
use hero_os_tfgrid_deployer_backends::hero_compute::assumed::REQUIRED_METHODS;
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayRequest, HeroComputeBackend, HeroComputeConfig,
    ResourceName, VmRequest, VmSpec,
};
use serde_json::{json, Value};

#[derive(Default)]
struct StandIn {
    methods: Vec<String>,
    vms: HashMap<String, Value>,
    gateways: HashMap<String, Value>,
    calls: Vec<(String, Value)>,
    fail_next_deploy: Option<(i64, String)>,
    /// `get_vm` answers with this VM whatever was asked (a mixed-up peer).
    answer_vm: Option<Value>,
    /// `delete_vm` answers with this error.
    fail_delete: Option<(i64, String)>,
    /// Results also carry `"error": null`, as some JSON-RPC servers send.
    null_error: bool,
    /// Answers carry this id instead of the request's (a confused peer).
    answer_id: Option<Value>,
}

type Shared = Arc<Mutex<StandIn>>;

async fn rpc(State(st): State<Shared>, Json(req): Json<Value>) -> Json<Value> {
    let method = req["method"].as_str().unwrap().to_string();
    let params = req["params"].clone();
    let mut s = st.lock().unwrap();
    let id = s.answer_id.clone().unwrap_or_else(|| req["id"].clone());
    s.calls.push((method.clone(), params.clone()));
    let null_error = s.null_error;
    let ok = |r: Value| {
        if null_error {
            Json(json!({"jsonrpc": "2.0", "id": id, "result": r, "error": null}))
        } else {
            Json(json!({"jsonrpc": "2.0", "id": id, "result": r}))
        }
    };
    let err = |code: i64, msg: &str| {
        Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": msg}}))
    };
    if method == "rpc.discover" {
        let methods: Vec<Value> = s
            .methods
            .iter()
            .map(|m| json!({"name": m, "params": [], "result": {"name": "r", "schema": {}}}))
            .collect();
        return ok(
            json!({"openrpc": "1.2.6", "info": {"title": "stand-in hero_compute", "version": "0"}, "methods": methods}),
        );
    }
    if !s.methods.contains(&method) {
        return err(-32601, "Method not found");
    }
    let name = params["name"].as_str().unwrap_or_default().to_string();
    match method.as_str() {
        "ComputeService.deploy_vm" => {
            if let Some((code, msg)) = s.fail_next_deploy.take() {
                return err(code, &msg);
            }
            let vm = json!({"name": name, "node_id": params["node_id"], "mycelium_ip": "4ab:1::2", "private_ip": "10.1.3.2", "state": "running"});
            s.vms.insert(name, vm.clone());
            ok(vm)
        }
        "ComputeService.get_vm" if s.answer_vm.is_some() => ok(s.answer_vm.clone().unwrap()),
        "ComputeService.delete_vm" if s.fail_delete.is_some() => {
            let (code, msg) = s.fail_delete.take().unwrap();
            err(code, &msg)
        }
        "ComputeService.get_vm" => match s.vms.get(&name) {
            Some(v) => ok(v.clone()),
            None => err(-32000, &format!("vm {name} not found")),
        },
        "ComputeService.delete_vm" => match s.vms.remove(&name) {
            Some(_) => ok(json!(true)),
            None => err(-32000, "VM not found"),
        },
        "ComputeService.deploy_webgateway" => {
            let gw = json!({"name": name, "fqdn": format!("{}.node{}.grid.tf", params["subdomain"].as_str().unwrap(), params["node_id"])});
            s.gateways.insert(name, gw.clone());
            ok(gw)
        }
        "ComputeService.delete_webgateway" => {
            s.gateways.remove(&name);
            ok(json!(true))
        }
        "ComputeService.list_vms" => ok(Value::Array(s.vms.values().cloned().collect())),
        _ => err(-32601, "Method not found"),
    }
}

async fn serve(sock: &Path, methods: &[&str]) -> Shared {
    let st: Shared = Arc::new(Mutex::new(StandIn {
        methods: methods.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }));
    let app = Router::new()
        .route("/rpc", post(rpc))
        .with_state(st.clone());
    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    st
}

fn sock() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("rpc.sock");
    (d, p)
}

fn req() -> VmRequest {
    VmRequest {
        name: ResourceName::new(5, "erin").unwrap(),
        spec: VmSpec::default(),
        ssh_public_key: "ssh-ed25519 AAAA test".into(),
        node_id: Some(13),
    }
}

#[tokio::test]
async fn refuses_when_methods_are_missing_and_names_them() {
    let (_d, p) = sock();
    serve(
        &p,
        &[
            "ComputeService.deploy_vm",
            "ComputeService.get_vm",
            "ComputeService.list_vms",
            "ComputeService.deploy_webgateway",
        ],
    )
    .await;
    let err = HeroComputeBackend::connect(HeroComputeConfig::new(&p))
        .await
        .unwrap_err();
    match &err {
        BackendError::MissingMethods { missing, .. } => assert_eq!(
            missing,
            &vec![
                "ComputeService.delete_vm".to_string(),
                "ComputeService.delete_webgateway".to_string()
            ]
        ),
        e => panic!("{e:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("ComputeService.delete_vm")
            && msg.contains("ComputeService.delete_webgateway"),
        "{msg}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn missing_socket_is_transient() {
    let (_d, p) = sock();
    let err = HeroComputeBackend::connect(HeroComputeConfig::new(&p))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "backend.unavailable");
    assert!(err.is_transient());
}

#[tokio::test]
async fn lifecycle_with_assumed_shapes() {
    let (_d, p) = sock();
    let st = serve(&p, &REQUIRED_METHODS).await;
    let be = HeroComputeBackend::connect(HeroComputeConfig::new(&p))
        .await
        .unwrap();
    let name = req().name;
    assert!(be.get_vm(&name).await.unwrap().is_none());

    // A server error (-32000..-32099) is transient; nothing was created.
    st.lock().unwrap().fail_next_deploy = Some((-32001, "grid busy".into()));
    let e = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    st.lock().unwrap().fail_next_deploy = Some((-32602, "invalid params: memory_gb".into()));
    let e = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    assert_eq!(e.code(), "backend.rejected");

    let vm = be.deploy_vm(&req(), discard_output()).await.unwrap();
    assert_eq!(vm.mycelium_ip.as_deref(), Some("4ab:1::2"));
    assert_eq!(vm.ssh.host, "4ab:1::2");
    assert_eq!(vm.web_backend_url, "http://10.1.3.2:9988");
    assert_eq!(vm.node_id, Some(13));
    {
        let s = st.lock().unwrap();
        let (_, params) = s
            .calls
            .iter()
            .find(|(m, _)| m == "ComputeService.deploy_vm")
            .unwrap();
        assert_eq!(params["memory_gb"], 8);
        assert_eq!(params["rootfs_gb"], 16);
        assert_eq!(params["disk_gb"], 200);
        assert_eq!(params["cpu"], 16);
        assert_eq!(params["node_id"], 13);
        assert_eq!(params["public_ip"], false);
    }
    // Idempotent: adopts.
    let deploys_before = st
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|(m, _)| m == "ComputeService.deploy_vm")
        .count();
    assert_eq!(be.deploy_vm(&req(), discard_output()).await.unwrap(), vm);
    let deploys_after = st
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|(m, _)| m == "ComputeService.deploy_vm")
        .count();
    assert_eq!(deploys_before, deploys_after);

    let gw = be
        .deploy_gateway(
            &GatewayRequest {
                name: name.clone(),
                host_label: "erin".into(),
                backend_url: vm.web_backend_url.clone(),
                node_id: Some(13),
            },
            discard_output(),
        )
        .await
        .unwrap();
    assert_eq!(gw.fqdn, "erin.node13.grid.tf");
    assert_eq!(be.get_gateway(&name).await.unwrap(), Some(gw));

    let inv = be.inventory().await.unwrap();
    assert!(inv.iter().any(|r| r.name.as_ref() == Some(&name)));
    // A result beside `"error": null` is a result.
    st.lock().unwrap().null_error = true;
    assert_eq!(be.inventory().await.unwrap(), inv);
    st.lock().unwrap().null_error = false;
    // An answer to another request (another id, none, or null beside a result) is not acted on.
    for answer_id in [json!(987_654), json!("1"), Value::Null] {
        st.lock().unwrap().answer_id = Some(answer_id.clone());
        let e = be.inventory().await.unwrap_err();
        assert_eq!(e.code(), "backend.protocol", "{answer_id}: {e}");
        assert!(e.to_string().contains("the answer is to request id"), "{e}");
    }
    st.lock().unwrap().answer_id = None;

    be.delete_gateway(&name, discard_output()).await.unwrap();
    assert!(be.get_gateway(&name).await.unwrap().is_none());
    // A "not found" about something else is not "the VM is gone": the delete fails, it does not report done.
    for other in [
        "node 13 not found",
        "contract not found",
        "twin not found on the grid",
    ] {
        st.lock().unwrap().fail_delete = Some((-32000, other.into()));
        let e = be.delete_vm(&name, discard_output()).await.unwrap_err();
        assert!(e.to_string().contains(other), "{other}: {e}");
    }
    // An answer about another VM is refused, not adopted.
    st.lock().unwrap().answer_vm =
        Some(json!({"name": "u9_mallory", "node_id": 13, "private_ip": "10.9.9.9"}));
    let e = be.get_vm(&name).await.unwrap_err();
    assert!(e.to_string().contains("answered with VM u9_mallory"), "{e}");
    st.lock().unwrap().answer_vm = None;
    be.delete_vm(&name, discard_output()).await.unwrap();
    be.delete_vm(&name, discard_output()).await.unwrap(); // already gone ("VM not found"): Ok
    st.lock().unwrap().fail_delete = Some((-32000, format!("vm {name} not found")));
    be.delete_vm(&name, discard_output()).await.unwrap(); // gone, named: Ok
    assert!(be.get_vm(&name).await.unwrap().is_none());
}

/// The prerequisite check names the path and what is wrong with it, without connecting.
#[tokio::test]
async fn prerequisites_name_the_socket_path() {
    let (_dir, path) = sock();
    let err = HeroComputeConfig::new(&path)
        .check_prerequisites()
        .unwrap_err();
    assert_eq!(err.code(), "backend.config");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("no socket at"), "{err}");
    std::fs::write(&path, "not a socket").unwrap();
    let err = HeroComputeConfig::new(&path)
        .check_prerequisites()
        .unwrap_err();
    assert!(err.to_string().contains("is not a unix socket"), "{err}");
    std::fs::remove_file(&path).unwrap();
    let _listener = tokio::net::UnixListener::bind(&path).unwrap();
    HeroComputeConfig::new(&path).check_prerequisites().unwrap();
}

/// The gateways this client deployed are remembered across a restart (hero_compute has no getter): before, a new
/// process answered "no gateway" for every one still serving, and inventory listed none. A record file that is
/// there but unreadable stops the client, naming it, instead of forgetting them all.
#[tokio::test]
async fn deployed_gateways_are_remembered_across_a_restart() {
    let (_d, p) = sock();
    serve(&p, &REQUIRED_METHODS).await;
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("hero_compute").join("gateways.json");
    let cfg = || HeroComputeConfig {
        gateways_file: Some(file.clone()),
        ..HeroComputeConfig::new(&p)
    };
    let name = req().name;
    let be = HeroComputeBackend::connect(cfg()).await.unwrap();
    let gw = be
        .deploy_gateway(
            &GatewayRequest {
                name: name.clone(),
                host_label: "erin".into(),
                backend_url: "http://10.1.3.2:9988".into(),
                node_id: Some(13),
            },
            discard_output(),
        )
        .await
        .unwrap();
    drop(be);

    let be = HeroComputeBackend::connect(cfg()).await.unwrap();
    assert_eq!(be.get_gateway(&name).await.unwrap(), Some(gw));
    assert!(be.inventory().await.unwrap().iter().any(|r| r.kind
        == hero_os_tfgrid_deployer_backends::ResourceKind::Gateway
        && r.name.as_ref() == Some(&name)));
    be.delete_gateway(&name, discard_output()).await.unwrap();
    drop(be);
    let be = HeroComputeBackend::connect(cfg()).await.unwrap();
    assert!(be.get_gateway(&name).await.unwrap().is_none());
    drop(be);

    std::fs::write(&file, b"{ half a record").unwrap();
    let e = HeroComputeBackend::connect(cfg()).await.unwrap_err();
    assert!(e.to_string().contains("gateways.json"), "{e}");
}
