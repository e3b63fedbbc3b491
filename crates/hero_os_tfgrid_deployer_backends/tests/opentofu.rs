//! OpenTofu backend: golden files of the generated `main.tf.json` (stability only: correctness is
//! the vendored-schema walk of `tests/provider_schema.rs`, also applied here to every config the
//! backend writes), and process handling with the STAND-IN `tests/fixtures/fake-tofu` (not
//! OpenTofu; it records argv/env, answers `providers schema -json` with the vendored schema in
//! OpenTofu's format, and can be told to fail, hang or refuse a gateway name as TFChain does).
//!
//! Update the golden files with `UPDATE_GOLDEN=1 cargo test -p hero_os_tfgrid_deployer_backends --test opentofu`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hero_os_tfgrid_deployer_backends::compute::discard_output;
use hero_os_tfgrid_deployer_backends::opentofu::{
    child_env, render_main_tf_json, TfInputs, INHERITED_ENV,
};
use hero_os_tfgrid_deployer_backends::provider_schema::{
    check_config, grid_client_rules, ProviderSchema,
};
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
        gateway_label: gateway.then(|| "jandevries".to_string()),
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

const SCHEMA: &str = include_str!("fixtures/tfgrid/terraform-provider-grid.schema.json");
const SCHEMA_V1_11_1: &str =
    include_str!("fixtures/tfgrid/terraform-provider-grid.v1.11.1.schema.json");

fn vendored(text: &str) -> ProviderSchema {
    ProviderSchema::from_extraction(&serde_json::from_str(text).unwrap(), "vendored").unwrap()
}

/// The vendored schema walk (see tests/provider_schema.rs) on a config the backend wrote.
fn check_schema(cfg: &Value) {
    let v: Vec<String> = check_config(&vendored(SCHEMA), cfg, &["MNEMONIC"])
        .into_iter()
        .chain(grid_client_rules(cfg))
        .map(|v| v.to_string())
        .collect();
    assert!(v.is_empty(), "{v:#?}");
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
    schema: PathBuf,
}

/// Write `text` (an extraction) as `tofu providers schema -json` would print that provider.
fn write_tofu_schema(path: &Path, text: &str) {
    let doc =
        vendored(text).to_tofu_json("registry.opentofu.org/threefoldtech/grid", &["MNEMONIC"]);
    std::fs::write(path, doc.to_string()).unwrap();
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tofu");
        let schema = dir.path().join("schema.json");
        write_tofu_schema(&schema, SCHEMA);
        Self {
            log: dir.path().join("calls.log"),
            control: dir.path().join("control"),
            schema,
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
            ("FAKE_TOFU_SCHEMA".into(), self.schema.display().to_string()),
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
            "init -input=false -upgrade",
            "providers schema -json",
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
    assert_eq!(fake.calls().len(), 5);
    assert_eq!(be.get_vm(&name).await.unwrap(), Some(vm.clone()));

    // Gateway: rewrites main.tf.json with grid_name_proxy, same seeds; adopt on re-run. The
    // label comes from grid_names (the server still passes the grid name; it is not a DNS label).
    let gw_req = GatewayRequest {
        name: name.clone(),
        host_label: "jan_de_vries".into(),
        backend_url: vm.web_backend_url.clone(),
        node_id: Some(8),
    };
    let gw = be.deploy_gateway(&gw_req, discard_output()).await.unwrap();
    assert_eq!(gw.fqdn, "jandevries.node8.grid.tf");
    assert_eq!(gw.url, "https://jandevries.node8.grid.tf/");
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

/// `apply` prints the plan, where the provider shows the network's mycelium key and the VM's mycelium IP seed (it
/// marks neither sensitive): neither reaches a shown line, as the mnemonic does not.
#[tokio::test]
async fn the_plan_shows_no_mycelium_key_or_seed() {
    let fake = Fake::new();
    let be = fake.backend(7);
    let (out, lines) = collect();
    be.deploy_vm(&req(), out).await.unwrap();
    let desired: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(be.work_dir(&req().name).join("desired.json")).unwrap(),
    )
    .unwrap();
    let key = desired["inputs"]["mycelium_key_hex"].as_str().unwrap();
    let seed = desired["inputs"]["mycelium_ip_seed_hex"].as_str().unwrap();
    assert_eq!((key.len(), seed.len()), (64, 12));
    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("mycelium_keys"))
            && lines.iter().any(|l| l.contains("mycelium_ip_seed")),
        "the stand-in printed its plan: {lines:?}"
    );
    for l in lines.iter() {
        assert!(!l.contains(key) && !l.contains(seed), "{l}");
    }
    assert!(
        lines.iter().filter(|l| l.contains("<redacted>")).count() >= 2,
        "{lines:?}"
    );
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

    // An error that merely mentions a name existing is not TFChain's NameExists.
    let gw = GatewayRequest {
        name: req().name,
        host_label: "jan_de_vries".into(),
        backend_url: String::new(),
        node_id: None,
    };
    for msg in [
        "Error: name already registered by another twin",
        "Error: couldn't deploy deployment: disk name exists",
        "│ Error: couldn't deploy name gateway with error: NameExistsNot",
        "NameExists",
    ] {
        fake.control(&format!("fail=apply\nmessage={msg}\n"));
        let err = be.deploy_gateway(&gw, discard_output()).await.unwrap_err();
        assert_eq!(err.code(), "backend.tool_failed", "{msg}: {err}");
    }

    // TFChain's NameExists for the readable label: the deterministic fallback is used.
    fake.control("taken=jandevries\n");
    let (out, lines) = collect();
    let info = be.deploy_gateway(&gw, out).await.unwrap();
    assert_eq!(info.fqdn, "jandevriesu42.node8.grid.tf");
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("\"jandevries\" is taken on the test network")));
    be.delete_gateway(&req().name, discard_output())
        .await
        .unwrap();

    // Both taken: a clear error naming both labels.
    fake.control("taken=jandevries,jandevriesu42\n");
    let err = be.deploy_gateway(&gw, discard_output()).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::NameTaken { label, .. } if label == "jandevries, jandevriesu42"),
        "{err}"
    );
    assert!(err.to_string().contains("NameExists"), "{err}");

    // A gateway delete whose apply fails leaves the name proxy in the state: the gateway still exists (as the
    // state says, though desired.json no longer asks for it), and the next delete applies again. Before, the
    // label gone from desired.json answered "no gateway", and the retry returned at once, leaving it deployed.
    fake.control("");
    be.deploy_gateway(&gw, discard_output()).await.unwrap();
    fake.control("fail=apply\n");
    assert!(be
        .delete_gateway(&req().name, discard_output())
        .await
        .is_err());
    fake.control("");
    assert!(be.get_gateway(&req().name).await.unwrap().is_some());
    assert!(be
        .inventory()
        .await
        .unwrap()
        .iter()
        .any(|r| r.kind == ResourceKind::Gateway));
    be.delete_gateway(&req().name, discard_output())
        .await
        .unwrap();
    assert!(be.get_gateway(&req().name).await.unwrap().is_none());
    assert!(be
        .inventory()
        .await
        .unwrap()
        .iter()
        .all(|r| r.kind != ResourceKind::Gateway));

    // Destroy failure keeps the working dir (the state is still needed).
    fake.control("fail=destroy\n");
    assert!(be.delete_vm(&req().name, discard_output()).await.is_err());
    assert!(dir.join("terraform.tfstate").exists());
    fake.control("");
    be.delete_vm(&req().name, discard_output()).await.unwrap();
}

/// A tool printing without a newline or without end must not grow the deployer's memory: every line shown is
/// cut at `lines::MAX_LINE`, and stdout (kept whole for parsing) fails the run past its bound.
#[tokio::test]
async fn endless_tool_output_is_bounded() {
    let fake = Fake::new();
    let be = fake.backend(4);
    // The mnemonic is redacted before a line is cut for showing: one placed across the shown bound is not
    // shown in part.
    let pad = "p".repeat(8192 - 10);
    fake.control(&format!("fail=apply\nmessage={pad}{MNEMONIC}\n"));
    let (out, lines) = collect();
    let err = be.deploy_vm(&req(), out).await.unwrap_err();
    let first_words = &MNEMONIC[..8];
    assert!(!err.to_string().contains(first_words), "{err}");
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .all(|l| !l.contains(first_words)));

    fake.control("flood=apply\n");
    let (out, lines) = collect();
    be.deploy_vm(&req(), out).await.unwrap();
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    assert!(lines.len() > 3000, "{}", lines.len());
    assert!(
        lines.iter().all(|l| l.len() <= 8192 + 64),
        "a line was not cut"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("xxxx") && l.ends_with("[line cut at 8192 bytes]")));
    assert!(lines.iter().any(|l| l == "progress line 3000"));

    fake.control("flood_stdout=output\n");
    let err = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("printed more than 64 MiB on stdout"),
        "{err}"
    );
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

/// A call given up on (here its timeout; in the server also a cancel, a step deadline or a stop) interrupts tofu
/// rather than SIGKILLing it: OpenTofu then stops its provider and writes the state of what it made, where a
/// kill mid-apply can leave grid contracts no state knows. The stand-in records the SIGINT it got.
#[tokio::test]
async fn a_given_up_call_interrupts_tofu_instead_of_killing_it() {
    let fake = Fake::new();
    let be_cfg = || {
        let mut cfg =
            OpenTofuConfig::new(&fake.root, Network::Test, Zeroizing::new(MNEMONIC.into()));
        cfg.tofu_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-tofu");
        cfg.extra_env = vec![
            ("FAKE_TOFU_LOG".into(), fake.log.display().to_string()),
            (
                "FAKE_TOFU_CONTROL".into(),
                fake.control.display().to_string(),
            ),
            ("FAKE_TOFU_SCHEMA".into(), fake.schema.display().to_string()),
        ];
        cfg.short_timeout = Duration::from_secs(20);
        cfg.apply_timeout = Duration::from_millis(800);
        cfg
    };
    let be = OpenTofuBackend::new(
        be_cfg(),
        Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(5)),
    );
    fake.control("hang_int=apply\n");
    let err = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    assert_eq!(err.code(), "backend.timeout", "{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(&fake.log).unwrap_or_default();
        if log.contains("INTERRUPTED apply") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tofu was not interrupted (killed outright?): {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// The runtime check: the stand-in answers `providers schema -json` with the v1.11.1 provider
/// (mount key `disk_name`, provider key `mnemonics`). The backend must refuse before `apply`,
/// naming the attributes.
#[tokio::test]
async fn an_installed_provider_with_renamed_attributes_is_refused_before_apply() {
    let fake = Fake::new();
    write_tofu_schema(&fake.schema, SCHEMA_V1_11_1);
    let be = fake.backend(6);
    let err = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.code(), "backend.config", "{msg}");
    assert!(!err.is_transient());
    assert!(
        msg.contains("resource.grid_deployment.vm.vms[0].mounts[0].name: unknown attribute"),
        "{msg}"
    );
    assert!(
        msg.contains("provider.grid.mnemonic: the provider has no `mnemonic` attribute"),
        "{msg}"
    );
    // As the real SDKv2 reports it: MNEMONICS is not in the child's env, so `mnemonics` is required.
    assert!(
        msg.contains("provider.grid.mnemonics: required attribute missing"),
        "{msg}"
    );
    assert!(msg.contains("nothing was applied"), "{msg}");
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("apply")),
        "apply must not run: {:?}",
        fake.calls()
    );

    // One renamed attribute, synthetic: `vms[].flist` → `image` in an otherwise current schema.
    let mut doc: Value = serde_json::from_str(SCHEMA).unwrap();
    let vms = &mut doc["resources"]["grid_deployment"]["attributes"]["vms"]["block"];
    let flist = vms.as_object_mut().unwrap().remove("flist").unwrap();
    vms["image"] = flist;
    write_tofu_schema(&fake.schema, &doc.to_string());
    let err = be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("vms[0].flist: unknown attribute"), "{msg}");
    assert!(
        msg.contains("vms[0].image: required attribute missing"),
        "{msg}"
    );

    // Back to the matching schema: the same working dir deploys.
    write_tofu_schema(&fake.schema, SCHEMA);
    be.deploy_vm(&req(), discard_output()).await.unwrap();
}

/// The child sees only the allow-listed parent variables, the configured extras and its own;
/// the stand-in records the names of its whole environment.
#[tokio::test]
async fn the_tofu_child_gets_a_clean_environment() {
    let fake = Fake::new();
    let be = fake.backend(7);
    be.deploy_vm(&req(), discard_output()).await.unwrap();
    let log = std::fs::read_to_string(&fake.log).unwrap();
    let mut allowed: Vec<&str> = INHERITED_ENV.to_vec();
    allowed.extend([
        "FAKE_TOFU_LOG",
        "FAKE_TOFU_CONTROL",
        "FAKE_TOFU_SCHEMA",
        "TF_IN_AUTOMATION",
        "TF_INPUT",
        "MNEMONIC",
        // Set by bash itself for the stand-in script.
        "PWD",
        "SHLVL",
        "OLDPWD",
        "_",
    ]);
    let mut seen = 0;
    for line in log.lines().filter_map(|l| l.strip_prefix("ENV ")) {
        seen += 1;
        for name in line.split_whitespace() {
            assert!(allowed.contains(&name), "the child got {name}: {line}");
        }
        assert!(line.split_whitespace().any(|n| n == "MNEMONIC"));
    }
    assert!(seen >= 4, "{log}");
    // The test process has CARGO_* variables; none reached the child.
    assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")));
}

#[test]
fn child_env_drops_every_variable_that_changes_the_provider() {
    let hostile: Vec<(String, String)> = [
        ("SUBSTRATE_URL", "wss://evil"),
        ("RELAY_URL", "wss://evil"),
        ("PROXY_URL", "https://evil"),
        ("GRAPHQL_URL", "https://evil"),
        ("KEY_TYPE", "ed25519"),
        ("NETWORK", "dev"),
        ("MNEMONICS", "other words"),
        ("MNEMONIC", "parent words"),
        ("RMB_TIMEOUT", "1"),
        ("TF_LOG", "TRACE"),
        ("TF_LOG_PATH", "/tmp/x"),
        ("TF_VAR_x", "1"),
        ("TF_CLI_ARGS_apply", "-destroy"),
        ("TF_CLI_CONFIG_FILE", "/tmp/evil"),
        ("HERO_SECRET", "s"),
        ("PATH", "/usr/bin"),
        ("HOME", "/home/x"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let extra: Vec<(String, String)> = [
        ("TF_PLUGIN_CACHE_DIR", "/cache"),
        ("NETWORK", "main"),
        ("MNEMONIC", "extra words"),
        ("TF_LOG", "DEBUG"),
        ("SUBSTRATE_URL", "wss://x"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let env = child_env(hostile, &extra, "the words");
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "PATH",
            "HOME",
            "TF_PLUGIN_CACHE_DIR",
            "TF_IN_AUTOMATION",
            "TF_INPUT",
            "MNEMONIC"
        ]
    );
    assert_eq!(env.last().unwrap().1, "the words");
}

#[tokio::test]
async fn prerequisites_are_reported_precisely_without_the_network() {
    let fake = Fake::new();
    let tofu = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-tofu");
    let base = || {
        let mut c = OpenTofuConfig::new(&fake.root, Network::Test, Zeroizing::new(MNEMONIC.into()));
        c.tofu_bin = tofu.clone();
        c
    };
    base().check_prerequisites().unwrap();
    let not_exec = fake.root.parent().unwrap().join("tofu-not-exec");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    type Edit = Box<dyn Fn(&mut OpenTofuConfig)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c| c.mnemonic = Zeroizing::new(String::new())),
            "no TFGrid mnemonic",
        ),
        (
            Box::new(|c| c.mnemonic = Zeroizing::new("  \n".into())),
            "no TFGrid mnemonic",
        ),
        (
            Box::new(|c| c.tofu_bin = PathBuf::from("/nonexistent/tofu")),
            "/nonexistent/tofu does not exist",
        ),
        (
            Box::new(move |c| c.tofu_bin = not_exec.clone()),
            "not executable",
        ),
        (
            Box::new(|c| c.tofu_bin = PathBuf::from("tofu-surely-not-in-path")),
            "not found in PATH",
        ),
        (
            Box::new(|c| c.provider_version = Some("1.11.2-dev".into())),
            "needs an X.Y.Z-rcN or stable",
        ),
        (
            Box::new(|c| c.provider_version = Some("~> 1.11".into())),
            "not an exact",
        ),
        (
            Box::new(|c| {
                c.network = Network::Main;
                c.provider_version = Some("1.11.2-qa".into());
            }),
            "main network needs a stable",
        ),
        (
            Box::new(|c| c.extra_env.push(("SUBSTRATE_URL".into(), "wss://x".into()))),
            "extra_env sets SUBSTRATE_URL",
        ),
        (
            Box::new(|c| c.extra_env.push(("TF_LOG".into(), "TRACE".into()))),
            "extra_env sets TF_LOG",
        ),
    ];
    for (edit, expect) in cases {
        let mut c = base();
        edit(&mut c);
        let err = c.check_prerequisites().unwrap_err();
        assert_eq!(err.code(), "backend.config");
        assert!(err.to_string().contains(expect), "{expect:?} not in {err}");
        assert!(!err.to_string().contains(MNEMONIC));
        // The trait method says the same on a built backend.
        let be = OpenTofuBackend::new(c, Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(8)));
        assert_eq!(
            ComputeBackend::check_prerequisites(&be)
                .unwrap_err()
                .to_string(),
            err.to_string()
        );
    }
}

/// A working dir written before the pin and the new names (no `version`, label `jan_de_vries`)
/// is still destroyed, with the pinned provider; a re-deploy drops the old label.
#[tokio::test]
async fn working_dirs_from_before_the_pin_are_destroyed_with_it() {
    let fake = Fake::new();
    let be = fake.backend(9);
    be.deploy_vm(&req(), discard_output()).await.unwrap();
    let dir = be.work_dir(&req().name);
    // Make it look old: desired.json without a version and with the former label.
    let mut desired: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("desired.json")).unwrap()).unwrap();
    desired["inputs"]["provider_version"] = Value::Null;
    desired["inputs"]["gateway_label"] = Value::String("jan_de_vries".into());
    std::fs::write(dir.join("desired.json"), desired.to_string()).unwrap();
    let mut main: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("main.tf.json")).unwrap()).unwrap();
    main["terraform"]["required_providers"]["grid"]
        .as_object_mut()
        .unwrap()
        .remove("version");
    std::fs::write(dir.join("main.tf.json"), main.to_string()).unwrap();
    std::fs::remove_file(dir.join("terraform.tfstate")).unwrap();

    // Re-deploy: the old label is not kept (it would break the grid's rules).
    be.deploy_vm(&req(), discard_output()).await.unwrap();
    let d: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("desired.json")).unwrap()).unwrap();
    assert_eq!(d["inputs"]["gateway_label"], Value::Null);
    assert_eq!(d["inputs"]["provider_version"], "1.11.2");

    // Old label again, then destroy: refused by no rule, and destroyed with the pin.
    let mut d2 = d.clone();
    d2["inputs"]["gateway_label"] = Value::String("jan_de_vries".into());
    d2["inputs"]["provider_version"] = Value::Null;
    std::fs::write(dir.join("desired.json"), d2.to_string()).unwrap();
    std::fs::write(dir.join("main.tf.json"), main.to_string()).unwrap();
    let calls_before = fake.calls().len();
    let log_before = std::fs::read_to_string(&fake.log).unwrap().len();
    be.delete_vm(&req().name, discard_output()).await.unwrap();
    assert!(!dir.exists());
    assert!(fake.calls()[calls_before..]
        .iter()
        .any(|c| c == "destroy -auto-approve -input=false"));
    let log = std::fs::read_to_string(&fake.log).unwrap();
    assert!(log[log_before..].contains("CALL init -input=false -upgrade"));
    assert!(
        log[log_before..].contains("PIN = 1.11.2"),
        "{}",
        &log[log_before..]
    );
}

/// A `tofu` still running in a VM's working dir from a deployer that was killed outright (it runs in its own
/// process group, so it outlives its parent) holds the dir: the next deployer's run says so and waits for it,
/// and starts only once it ended. Before, the two ran side by side in one dir. The orphan here is util-linux
/// `flock` holding the lock the way the backend's own runs do, around a process the test ends.
#[tokio::test]
async fn a_tofu_left_running_by_a_dead_deployer_holds_its_working_dir() {
    use std::io::Write;
    let fake = Fake::new();
    let be = fake.backend(9);
    let dir = be.work_dir(&req().name);
    std::fs::create_dir_all(&dir).unwrap();
    let lock = dir.join(hero_os_tfgrid_deployer_backends::run_lock::LOCK_FILE);
    let log = fake.log.clone();
    /// Killed by PID if the test ends early.
    struct Orphan(std::process::Child);
    impl Drop for Orphan {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut orphan = Orphan(
        std::process::Command::new("flock")
            .arg("--no-fork")
            .arg(&lock)
            .arg("sh")
            .arg("-c")
            .arg(format!("read _; echo ORPHAN-ENDED >> '{}'", log.display()))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !hero_os_tfgrid_deployer_backends::run_lock::busy(&dir) {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (out, lines) = collect();
    let deploy = tokio::spawn(async move { be.deploy_vm(&req(), out).await });
    // The run announces the wait before it starts waiting; nothing has run in the dir yet.
    loop {
        if lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("another tofu still runs"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no wait announced: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        fake.calls().is_empty(),
        "ran beside the orphan: {:?}",
        fake.calls()
    );
    orphan.0.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(orphan.0.wait().unwrap().success());
    let info = deploy.await.unwrap().unwrap();
    assert_eq!(info.node_id, Some(8));
    let log = std::fs::read_to_string(&fake.log).unwrap();
    let ended = log.find("ORPHAN-ENDED").unwrap();
    let first_call = log.find("CALL ").unwrap();
    assert!(ended < first_call, "{log}");
}

/// An apply that fails after creating the network leaves a state holding only `grid_network.net`: no VM
/// (`get_vm` is `None`) and no gateway, yet a contract runs. `remains` names it, so `vm forget` cannot drop the
/// record; `delete_vm` destroys it. A state that cannot be parsed is an error, never "nothing there".
#[tokio::test]
async fn a_network_left_by_a_failed_apply_remains_until_destroyed() {
    let fake = Fake::new();
    let be = fake.backend(3);
    let name = req().name;
    assert!(be.remains(&name).await.unwrap().is_empty(), "no dir yet");
    fake.control("partial=apply\n");
    be.deploy_vm(&req(), discard_output()).await.unwrap_err();
    assert!(be.get_vm(&name).await.unwrap().is_none());
    assert!(be.get_gateway(&name).await.unwrap().is_none());
    assert_eq!(
        be.remains(&name).await.unwrap(),
        ["grid_network.net in the opentofu state"]
    );

    // A full deploy: everything in the state is named (the caller asks only when get_vm and
    // get_gateway found nothing).
    fake.control("");
    be.deploy_vm(&req(), discard_output()).await.unwrap();
    let all = be.remains(&name).await.unwrap();
    assert!(
        all.contains(&"grid_deployment.vm in the opentofu state".to_owned()),
        "{all:?}"
    );

    let state = be.work_dir(&name).join("terraform.tfstate");
    let good = std::fs::read_to_string(&state).unwrap();
    for garbled in [
        "{\"resources\": [",
        "{\"resources\": 7}",
        "{\"resources\": [{\"type\": 1}]}",
    ] {
        std::fs::write(&state, garbled).unwrap();
        let err = be.remains(&name).await.unwrap_err().to_string();
        assert!(err.contains("terraform.tfstate"), "{garbled}: {err}");
        let err = be.get_gateway(&name).await.unwrap_err().to_string();
        assert!(err.contains("terraform.tfstate"), "{garbled}: {err}");
    }
    std::fs::write(&state, good).unwrap();

    be.delete_vm(&name, discard_output()).await.unwrap();
    assert!(be.remains(&name).await.unwrap().is_empty());
}
