//! OpenTofu backend: golden files of the generated `main.tf.json`, a check against the provider
//! schema facts (shared/reference/tfgrid-apis.md §1), and process handling with the STAND-IN
//! `tests/fixtures/fake-tofu` (not OpenTofu; it records argv/env and can be told to fail).
//!
//! Update the golden files with `UPDATE_GOLDEN=1 cargo test -p hero_os_tfgrid_deployer_backends --test opentofu`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hero_os_tfgrid_deployer_backends::compute::discard_output;
use hero_os_tfgrid_deployer_backends::opentofu::{render_main_tf_json, TfInputs};
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayRequest, Network, OpenTofuBackend, OpenTofuConfig,
    OutputSink, ResourceKind, ResourceName, VmRequest, VmSpec,
};
use rand::SeedableRng;
use serde_json::Value;
use zeroize::Zeroizing;

const MNEMONIC: &str = "wood flock skill dawn tiger orbit fake words for the stand in test only";
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb1a2V5Zm9ydGVzdHNvbmx5bm90cmVhbGtleTAxMjM0 hero_u42@deployer";

fn inputs(gateway: bool) -> TfInputs {
    TfInputs {
        name: ResourceName::new(42, "jan_de_vries").unwrap(),
        network: Network::Main,
        node_id: 8,
        spec: VmSpec::default(),
        ssh_public_key: SSH_KEY.into(),
        mycelium_key_hex: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
        mycelium_ip_seed_hex: "a1b2c3d4e5f6".into(),
        ip_range: "10.20.0.0/16".into(),
        web_port: 9988,
        gateway_label: gateway.then(|| "jan_de_vries".to_string()),
        provider_version: None,
    }
}

fn golden(file: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let text = format!("{}\n", serde_json::to_string_pretty(actual).unwrap());
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        text, expected,
        "{file} differs from the golden file; review and run with UPDATE_GOLDEN=1 if intended"
    );
}

#[test]
fn golden_main_tf_json() {
    golden("main.tf.json", &render_main_tf_json(&inputs(true)));
    golden("main_vm_only.tf.json", &render_main_tf_json(&inputs(false)));
}

fn is_grid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_hex(s: &str, bytes: usize) -> bool {
    s.len() == bytes * 2 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The provider schema facts of shared/reference/tfgrid-apis.md §1, checked on the generated JSON.
fn check_schema(cfg: &Value) {
    // Provider: network always set, to a known network; the mnemonic never in the file.
    let net = cfg["provider"]["grid"]["network"].as_str().unwrap();
    assert!(["dev", "qa", "test", "main"].contains(&net));
    assert!(cfg["provider"]["grid"].get("mnemonic").is_none());
    assert_eq!(
        cfg["terraform"]["required_providers"]["grid"]["source"],
        "threefoldtech/grid"
    );
    let res = &cfg["resource"];
    // grid_network: name, nodes, ip_range (a /16) required; mycelium_keys node → 32-byte hex.
    let n = &res["grid_network"]["net"];
    assert!(is_grid_name(n["name"].as_str().unwrap()));
    let nodes: Vec<u64> = n["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(!nodes.is_empty());
    assert!(n["ip_range"].as_str().unwrap().ends_with("/16"));
    for (node, key) in n["mycelium_keys"].as_object().unwrap() {
        assert!(
            nodes.contains(&node.parse::<u64>().unwrap()),
            "mycelium key for a node not in the network"
        );
        assert!(is_hex(key.as_str().unwrap(), 32));
    }
    // grid_deployment.
    let d = &res["grid_deployment"]["vm"];
    let dep_node = d["node"].as_u64().unwrap();
    assert!(nodes.contains(&dep_node), "VM node must be in the network");
    assert!(is_grid_name(d["name"].as_str().unwrap()));
    for disk in d["disks"].as_array().unwrap() {
        assert!(is_grid_name(disk["name"].as_str().unwrap()));
        let gb = disk["size"].as_u64().unwrap();
        assert!((1..=10240).contains(&gb), "disk size in GB 1..10240");
    }
    let vms = d["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 1);
    let vm = &vms[0];
    assert!(is_grid_name(vm["name"].as_str().unwrap()));
    assert!(vm["flist"].as_str().unwrap().ends_with(".flist"));
    assert!((1..=32).contains(&vm["cpu"].as_u64().unwrap()));
    assert!(
        (256..=262_144).contains(&vm["memory"].as_u64().unwrap()),
        "memory in MB"
    );
    assert!(
        (1024..=10_485_760).contains(&vm["rootfs_size"].as_u64().unwrap()),
        "rootfs in MB"
    );
    assert!(is_hex(vm["mycelium_ip_seed"].as_str().unwrap(), 6));
    assert_eq!(vm["publicip"], false);
    assert_eq!(vm["planetary"], false);
    assert!(vm["env_vars"]["SSH_KEY"]
        .as_str()
        .unwrap()
        .starts_with("ssh-ed25519 "));
    for m in vm["mounts"].as_array().unwrap() {
        let disk = m["name"].as_str().unwrap();
        assert!(
            d["disks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == disk),
            "mount of an unknown disk"
        );
        assert!(m["mount_point"].as_str().unwrap().starts_with('/'));
    }
    // No attributes the provider does not have.
    for bad in ["ygg_ip", "wireguard_config"] {
        assert!(vm.get(bad).is_none());
    }
    // grid_name_proxy, if present: name, node (in the network), backends http://…, network.
    if let Some(gw) = res.get("grid_name_proxy") {
        let gw = &gw["gw"];
        assert!(is_grid_name(gw["name"].as_str().unwrap()));
        assert!(
            nodes.contains(&gw["node"].as_u64().unwrap()),
            "gateway node must be in the network"
        );
        assert_eq!(gw["tls_passthrough"], false);
        for b in gw["backends"].as_array().unwrap() {
            let b = b.as_str().unwrap();
            assert!(
                b.starts_with("http://"),
                "backends are http://ip:port when tls_passthrough=false"
            );
            assert!(!b.contains("127.0.0.1") && !b.contains("localhost"));
        }
        assert!(gw["network"]
            .as_str()
            .unwrap()
            .contains("grid_network.net.name"));
        assert!(cfg["output"].get("fqdn").is_some());
    }
}

#[test]
fn generated_config_matches_provider_schema_facts() {
    for gw in [false, true] {
        let cfg = render_main_tf_json(&inputs(gw));
        check_schema(&cfg);
        let text = cfg.to_string();
        assert!(!text.contains(MNEMONIC));
        assert!(!text.to_lowercase().contains("mnemonic"));
    }
    let vm = &render_main_tf_json(&inputs(false))["resource"]["grid_deployment"]["vm"]["vms"][0];
    assert_eq!(vm["cpu"], 16);
    assert_eq!(vm["memory"], 8192);
    assert_eq!(vm["rootfs_size"], 16384);
    assert_eq!(vm["entrypoint"], "/sbin/zinit init");
    assert_eq!(
        vm["flist"],
        "https://hub.grid.tf/tf-official-vms/ubuntu-24.04-latest.flist"
    );
}

struct Fake {
    _dir: tempfile::TempDir,
    root: PathBuf,
    log: PathBuf,
    control: PathBuf,
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tofu");
        Self {
            log: dir.path().join("calls.log"),
            control: dir.path().join("control"),
            root,
            _dir: dir,
        }
    }
    fn backend(&self, seed: u64) -> OpenTofuBackend {
        let mut cfg =
            OpenTofuConfig::new(&self.root, Network::Test, Zeroizing::new(MNEMONIC.into()));
        cfg.tofu_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-tofu");
        cfg.extra_env = vec![
            ("FAKE_TOFU_LOG".into(), self.log.display().to_string()),
            (
                "FAKE_TOFU_CONTROL".into(),
                self.control.display().to_string(),
            ),
        ];
        cfg.short_timeout = Duration::from_secs(20);
        cfg.apply_timeout = Duration::from_secs(20);
        OpenTofuBackend::new(cfg, Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed)))
    }
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("CALL ").map(str::to_string))
            .collect()
    }
    fn control(&self, text: &str) {
        std::fs::write(&self.control, text).unwrap();
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

fn req() -> VmRequest {
    VmRequest {
        name: ResourceName::new(42, "jan_de_vries").unwrap(),
        spec: VmSpec::default(),
        ssh_public_key: SSH_KEY.into(),
        node_id: Some(8),
    }
}

#[tokio::test]
async fn deploy_get_gateway_delete_with_the_stand_in() {
    let fake = Fake::new();
    let be = fake.backend(1);
    let name = req().name;
    assert!(be.get_vm(&name).await.unwrap().is_none());
    let (out, lines) = collect();
    let vm = be.deploy_vm(&req(), out).await.unwrap();
    assert_eq!(vm.private_ip.as_deref(), Some("10.20.2.2"));
    assert_eq!(vm.mycelium_ip.as_deref(), Some("5ab:1c2d:3e4f::1"));
    assert_eq!(vm.ssh.host, "5ab:1c2d:3e4f::1");
    assert_eq!(vm.web_backend_url, "http://10.20.2.2:9988");
    assert_eq!(
        vm.manifest_path,
        "/home/driver/hero/cfg/cockpit/services.toml"
    );
    assert_eq!(vm.node_id, Some(8));
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("Apply complete!")),
        "stdout streamed: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Warning: fake provider note")),
        "stderr streamed"
    );
    assert_eq!(
        fake.calls(),
        vec![
            "init -input=false",
            "apply -auto-approve -input=false",
            "output -json"
        ]
    );

    // MNEMONIC reached the child through its env, never argv nor main.tf.json.
    let log = std::fs::read_to_string(&fake.log).unwrap();
    assert!(log
        .lines()
        .filter(|l| l.starts_with("MNEMONIC "))
        .all(|l| l == format!("MNEMONIC {MNEMONIC}")));
    assert!(fake.calls().iter().all(|c| !c.contains("wood")));
    let dir = be.work_dir(&name);
    let main = std::fs::read_to_string(dir.join("main.tf.json")).unwrap();
    assert!(!main.contains(MNEMONIC));
    let cfg: Value = serde_json::from_str(&main).unwrap();
    check_schema(&cfg);
    assert_eq!(cfg["provider"]["grid"]["network"], "test");
    let seed = cfg["resource"]["grid_deployment"]["vm"]["vms"][0]["mycelium_ip_seed"].clone();

    // Idempotent: the second deploy adopts (only `output -json` runs).
    let again = be.deploy_vm(&req(), discard_output()).await.unwrap();
    assert_eq!(again, vm);
    assert_eq!(fake.calls().len(), 4);
    assert_eq!(be.get_vm(&name).await.unwrap(), Some(vm.clone()));

    // Gateway: rewrites main.tf.json with grid_name_proxy, same seeds; adopt on re-run.
    let gw_req = GatewayRequest {
        name: name.clone(),
        host_label: "jan_de_vries".into(),
        backend_url: vm.web_backend_url.clone(),
        node_id: Some(8),
    };
    let gw = be.deploy_gateway(&gw_req, discard_output()).await.unwrap();
    assert_eq!(gw.fqdn, "jan_de_vries.node8.grid.tf");
    assert_eq!(gw.url, "https://jan_de_vries.node8.grid.tf/");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("main.tf.json")).unwrap()).unwrap();
    check_schema(&cfg);
    assert_eq!(
        cfg["resource"]["grid_deployment"]["vm"]["vms"][0]["mycelium_ip_seed"],
        seed
    );
    let n = fake.calls().len();
    assert_eq!(
        be.deploy_gateway(&gw_req, discard_output()).await.unwrap(),
        gw
    );
    assert_eq!(fake.calls().len(), n + 1, "adoption only reads outputs");
    assert_eq!(be.get_gateway(&name).await.unwrap(), Some(gw.clone()));

    let inv = be.inventory().await.unwrap();
    assert_eq!(inv.len(), 2);
    assert!(inv
        .iter()
        .any(|r| r.kind == ResourceKind::Gateway && r.name == Some(name.clone())));

    // A fresh backend (deployer restart) finds the same VM from the working dir.
    let be2 = fake.backend(99);
    assert_eq!(be2.get_vm(&name).await.unwrap(), Some(vm.clone()));

    be.delete_gateway(&name, discard_output()).await.unwrap();
    assert!(be.get_gateway(&name).await.unwrap().is_none());
    be.delete_gateway(&name, discard_output()).await.unwrap();
    be.delete_vm(&name, discard_output()).await.unwrap();
    assert!(!dir.exists());
    assert!(fake
        .calls()
        .iter()
        .any(|c| c == "destroy -auto-approve -input=false"));
    be.delete_vm(&name, discard_output()).await.unwrap();
    assert!(be.get_vm(&name).await.unwrap().is_none());
    assert!(be.inventory().await.unwrap().is_empty());
}

#[tokio::test]
async fn failures_are_typed_and_the_mnemonic_is_redacted() {
    let fake = Fake::new();
    let be = fake.backend(2);
    fake.control(&format!(
        "fail=apply\nmessage=Error: deployment failed, node unreachable ({MNEMONIC})\n"
    ));
    let (out, lines) = collect();
    let err = be.deploy_vm(&req(), out).await.unwrap_err();
    match &err {
        BackendError::ToolFailed {
            tool,
            tail,
            transient,
            ..
        } => {
            assert_eq!(tool, "tofu apply -auto-approve -input=false");
            assert!(tail.iter().any(|l| l.contains("node unreachable")));
            assert!(!transient);
        }
        e => panic!("{e:?}"),
    }
    let shown = err.to_string();
    assert!(!shown.contains(MNEMONIC), "{shown}");
    assert!(lines.lock().unwrap().iter().all(|l| !l.contains(MNEMONIC)));
    assert!(shown.contains("<redacted>"));

    // Transient-looking failure.
    fake.control("fail=apply\nmessage=Error: failed to deploy: context deadline exceeded\n");
    let err = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    // The same random values are kept across failed attempts.
    let dir = be.work_dir(&req().name);
    let before = std::fs::read_to_string(dir.join("desired.json")).unwrap();
    fake.control("");
    be.deploy_vm(&req(), discard_output()).await.unwrap();
    let after = std::fs::read_to_string(dir.join("desired.json")).unwrap();
    assert_eq!(before, after);

    // Gateway name taken.
    fake.control("fail=apply\nmessage=Error: name already registered by another twin\n");
    let err = be
        .deploy_gateway(
            &GatewayRequest {
                name: req().name,
                host_label: "jan_de_vries".into(),
                backend_url: String::new(),
                node_id: None,
            },
            discard_output(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::NameTaken { label, .. } if label == "jan_de_vries"),
        "{err}"
    );

    // Destroy failure keeps the working dir (the state is still needed).
    fake.control("fail=destroy\n");
    assert!(be.delete_vm(&req().name, discard_output()).await.is_err());
    assert!(dir.join("terraform.tfstate").exists());
    fake.control("");
    be.delete_vm(&req().name, discard_output()).await.unwrap();
}

#[tokio::test]
async fn hung_child_times_out_and_is_killed() {
    let fake = Fake::new();
    let mut cfg = OpenTofuConfig::new(&fake.root, Network::Test, Zeroizing::new(MNEMONIC.into()));
    cfg.tofu_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-tofu");
    cfg.extra_env = vec![(
        "FAKE_TOFU_CONTROL".into(),
        fake.control.display().to_string(),
    )];
    cfg.short_timeout = Duration::from_millis(500);
    let be = OpenTofuBackend::new(cfg, Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(3)));
    fake.control("hang=init\n");
    let err = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    assert_eq!(err.code(), "backend.timeout");
    assert!(err.is_transient());
}

#[tokio::test]
async fn missing_node_or_binary_is_a_config_error() {
    let fake = Fake::new();
    let be = fake.backend(4);
    let mut r = req();
    r.node_id = None;
    assert_eq!(
        be.deploy_vm(&r, discard_output()).await.unwrap_err().code(),
        "backend.config"
    );
    let mut cfg = OpenTofuConfig::new(&fake.root, Network::Test, Zeroizing::new(MNEMONIC.into()));
    cfg.tofu_bin = PathBuf::from("/nonexistent/tofu");
    let be = OpenTofuBackend::new(cfg, Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(5)));
    let err = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    assert_eq!(err.code(), "backend.config");
    assert!(!format!("{be:?}").contains(MNEMONIC));
}
