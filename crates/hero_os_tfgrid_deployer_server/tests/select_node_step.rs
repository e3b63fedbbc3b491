//! The `select_node` step against a stand-in gridproxy over real HTTP, with payloads shaped like
//! `shared/tfgrid/gridproxy_nodes_example.json`: the chosen node is the step's result, every
//! rejected node is said as progress (which the runner writes as the job's events); all rejected
//! gives a precise, non-retried error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query};
use axum::routing::get;
use axum::Router;
use hero_os_tfgrid_deployer_backends::compute::discard_output;
use hero_os_tfgrid_deployer_backends::{BackendError, ComputeBackend, GridProxyClient, OutputSink};
use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_server::clock::{OsRandom, SystemClock};
use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::error::ServiceError;
use hero_os_tfgrid_deployer_server::forge::fake::FakeForge;
use hero_os_tfgrid_deployer_server::provision::agent::SshHttpAgent;
use hero_os_tfgrid_deployer_server::provision::config::ProvisionConfig;
use hero_os_tfgrid_deployer_server::provision::facts::Fact;
use hero_os_tfgrid_deployer_server::provision::lazy_backend::LazyBackend;
use hero_os_tfgrid_deployer_server::provision::sshkeys::PublicKeyFacts;
use hero_os_tfgrid_deployer_server::provision::steps::{
    self, JobContext, OutLine, StepAt, StepCx, StepEnv, StepRecords, UserKeys,
};
use hero_os_tfgrid_deployer_server::provision::store;
use hero_os_tfgrid_deployer_server::service::{CoreSettings, Deployer};
use hero_secrets::MemorySecretStore;
use serde_json::{json, Value};

/// Nodes shaped like the example capture: node 1 as captured (no health, no domain, SSD full),
/// 8 and 13 healthy gateways with room (8 has more), 50 down.
fn nodes() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hero_os_tfgrid_deployer_backends/tests/fixtures/gridproxy_nodes_example.json"
    ))
    .unwrap();
    let example: Vec<Value> = serde_json::from_str(&text).unwrap();
    let base = example[0].clone();
    let fit = |id: u64, used_mru_gib: u64| {
        let mut n = base.clone();
        n["nodeId"] = json!(id);
        n["healthy"] = json!(true);
        n["publicConfig"]["domain"] = json!(format!("node{id}.grid.tf"));
        // Node selection checks features (zos 3 set, gridproxy validators.go); the old capture has none.
        n["features"] = json!([
            "zmount",
            "network",
            "zmachine",
            "mycelium",
            "gateway-name-proxy"
        ]);
        n["used_resources"] = json!({"cru": 0, "sru": 0, "hru": 0, "mru": used_mru_gib << 30});
        n
    };
    let mut down = fit(50, 0);
    down["status"] = json!("down");
    let (eight, thirteen) = (fit(8, 10), fit(13, 100));
    vec![base, eight, thirteen, down]
}

async fn gridproxy() -> String {
    let list = nodes();
    let one = list.clone();
    let app = Router::new()
        .route(
            "/nodes",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let list = list.clone();
                async move {
                    let ids: Vec<u64> = q["node_ids"]
                        .split(',')
                        .map(|x| x.parse().unwrap())
                        .collect();
                    let out: Vec<Value> = list
                        .into_iter()
                        .filter(|n| ids.contains(&n["nodeId"].as_u64().unwrap()))
                        .collect();
                    Value::Array(out).to_string()
                }
            }),
        )
        .route(
            "/nodes/{id}",
            get(move |Path(id): Path<u64>| {
                let one = one.clone();
                async move {
                    let mut n = one
                        .into_iter()
                        .find(|n| n["nodeId"].as_u64() == Some(id))
                        .unwrap();
                    let obj = n.as_object_mut().unwrap();
                    let total = obj.remove("total_resources").unwrap();
                    let used = obj.remove("used_resources").unwrap();
                    obj.insert(
                        "capacity".into(),
                        json!({"total_resources": total, "used_resources": used}),
                    );
                    n.to_string()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Collects what the step says (the runner would write it as the step's events: the provision
/// tests cover that part).
#[derive(Default)]
struct Said(Mutex<Vec<OutLine>>);

#[async_trait::async_trait]
impl StepRecords for Said {
    fn line(&self, _: StepAt, line: OutLine) {
        self.0.lock().unwrap().push(line);
    }
    fn sink(&self, _: StepAt, _: u32, _: tokio::time::Instant) -> OutputSink {
        discard_output()
    }
    async fn record_now(&self, fact: Fact) -> Result<i64, ServiceError> {
        panic!("select_node records nothing: {fact:?}")
    }
    fn record_with_outcome(&self, fact: Fact) {
        panic!("select_node records nothing: {fact:?}")
    }
}

struct NoKeys;

#[async_trait::async_trait]
impl UserKeys for NoKeys {
    async fn ensure(&self, _: i64, _: &str) -> Result<(PublicKeyFacts, bool), ServiceError> {
        panic!("select_node needs no key")
    }
    async fn public(&self, _: i64) -> Result<Option<PublicKeyFacts>, ServiceError> {
        panic!("select_node needs no key")
    }
    async fn private(&self, _: i64) -> Result<zeroize::Zeroizing<String>, ServiceError> {
        panic!("select_node needs no key")
    }
}

/// Runs the step through its context, with the gridproxy client the server would build from
/// `grid.gridproxy_url`; returns its result, the context it left and the lines it said.
async fn run_select(
    candidates: Vec<u32>,
) -> (Result<String, steps::StepError>, JobContext, Vec<OutLine>) {
    run_select_with(candidates, None, gridproxy().await).await
}

/// `run_select` with a node pinned by the request and gridproxy at `url`.
async fn run_select_with(
    candidates: Vec<u32>,
    pinned: Option<u32>,
    url: String,
) -> (Result<String, steps::StepError>, JobContext, Vec<OutLine>) {
    let deployer = Deployer {
        db: Db::open_in_memory().unwrap(),
        secrets: Arc::new(MemorySecretStore::new()),
        forge: Arc::new(FakeForge::new()),
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
        settings: Arc::new(CoreSettings {
            email_domain: "x.test".into(),
            user_token_scopes: Vec::new(),
        }),
    };
    let mut cfg = ProvisionConfig {
        backend: "opentofu".into(),
        ..Default::default()
    };
    cfg.grid.candidate_nodes = candidates;
    let env = StepEnv {
        users: deployer,
        agent: Arc::new(SshHttpAgent),
        nodes: Ok(Arc::new(GridProxyClient::with_base_url(url).unwrap())),
        cfg,
        bootstrap_script: String::new(),
    };
    // A grid backend that is never built: select_node only asks where it places VMs.
    let backend: Arc<dyn ComputeBackend> = Arc::new(LazyBackend::new(
        "opentofu",
        Box::new(|| Box::pin(async { Err(BackendError::Config("not in this test".into())) })),
    ));
    let (job, _) = store::as_inserted(
        &store::NewJob {
            user_id: 1,
            forge_username: "alice",
            kind: JobKind::Provision,
            backend: "opentofu",
            actor: "test",
            options_json: "{}",
            context_json: "{}",
            steps: steps::PROVISION_STEPS,
            now_ms: 0,
        },
        1,
    );
    let (options, said, key) = (
        ProvisionOptions {
            node_id: pinned,
            ..ProvisionOptions::default()
        },
        Said::default(),
        steps::KeyCache::new(),
    );
    let mut ctx = JobContext::default();
    let cx = StepCx {
        job: &job,
        options: &options,
        at: StepAt {
            index: 3,
            count: 10,
            name: "select_node",
        },
        attempt: 1,
        started: tokio::time::Instant::now(),
        deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(30),
        env: &env,
        backend: Ok(backend),
        keys: &NoKeys,
        records: &said,
        key: &key,
    };
    let step = steps::by_name("select_node").unwrap();
    let result = step.run(&cx, &mut ctx).await;
    (result, ctx, said.0.into_inner().unwrap())
}

#[tokio::test]
async fn chooses_the_node_with_most_headroom_and_records_every_rejection() {
    let (result, ctx, events) = run_select(vec![1, 8, 13, 50]).await;
    let reason = result.unwrap();
    assert!(
        reason.starts_with("node 8 (node8.grid.tf) chosen"),
        "{reason}"
    );
    assert_eq!(ctx.node_id, Some(8));
    assert_eq!(ctx.node_domain.as_deref(), Some("node8.grid.tf"));
    let text: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    let find = |id: u32| {
        text.iter()
            .find(|m| m.starts_with(&format!("node {id} not chosen")))
            .copied()
            .unwrap_or_else(|| panic!("no event for node {id}: {text:?}"))
    };
    assert!(find(1).contains("health"), "{}", find(1));
    assert!(find(13).contains("less headroom"), "{}", find(13));
    assert!(find(50).contains("down"), "{}", find(50));
    assert!(events
        .iter()
        .all(|e| e.level == EventLevel::Info && e.attempt == Some(1)));
}

#[tokio::test]
async fn all_candidates_rejected_is_a_precise_permanent_error() {
    let (result, ctx, _) = run_select(vec![1, 50, 999]).await;
    let err = result.unwrap_err();
    assert_eq!(err.code, "select.no_candidate");
    assert!(!err.transient);
    for part in [
        "node 1:",
        "node 50:",
        "down",
        "node 999: not known to gridproxy",
    ] {
        assert!(
            err.message.contains(part),
            "{part} missing in {}",
            err.message
        );
    }
    assert_eq!(ctx.node_id, None);
}

/// A pinned node is checked as a chosen one would be: one that can take the VM is kept with its domain, one that is
/// down, unknown or full is a permanent error naming why (before, each went on to fail inside `tofu apply`), and
/// when gridproxy cannot be asked the pin stands, said so — pinning is the way past a gridproxy outage.
#[tokio::test]
async fn a_pinned_node_is_checked_like_a_chosen_one() {
    let url = gridproxy().await;
    let (result, ctx, _) = run_select_with(vec![1, 8], Some(13), url.clone()).await;
    let said = result.unwrap();
    assert!(
        said.contains("node 13 (node13.grid.tf) pinned by the request; checked"),
        "{said}"
    );
    assert_eq!(
        (ctx.node_id, ctx.node_domain.as_deref()),
        (Some(13), Some("node13.grid.tf"))
    );
    for (node, why) in [(50, "down"), (999, "not known to gridproxy"), (1, "health")] {
        let (result, _, _) = run_select_with(vec![8], Some(node), url.clone()).await;
        let err = result.unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.transient),
            ("select.pinned_unsuitable", false),
            "{node}"
        );
        assert!(
            err.message.contains(&format!(
                "node {node} pinned by the request cannot take this VM"
            )),
            "{}",
            err.message
        );
        assert!(
            err.message.contains(why),
            "{node}: {why} missing in {}",
            err.message
        );
    }
    let (result, ctx, _) = run_select_with(vec![8], Some(13), "http://127.0.0.1:1".into()).await;
    let said = result.unwrap();
    assert!(
        said.contains("not checked") && said.contains("deploying as pinned"),
        "{said}"
    );
    assert_eq!((ctx.node_id, ctx.node_domain), (Some(13), None));
}

/// Keeps what a step records (lines and facts), for steps that record.
#[derive(Default)]
struct Kept {
    lines: Mutex<Vec<String>>,
    facts: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl StepRecords for Kept {
    fn line(&self, _: StepAt, line: OutLine) {
        self.lines.lock().unwrap().push(line.message);
    }
    fn sink(&self, _: StepAt, _: u32, _: tokio::time::Instant) -> OutputSink {
        discard_output()
    }
    async fn record_now(&self, fact: Fact) -> Result<i64, ServiceError> {
        self.facts.lock().unwrap().push(format!("{fact:?}"));
        Ok(1)
    }
    fn record_with_outcome(&self, fact: Fact) {
        self.facts.lock().unwrap().push(format!("{fact:?}"));
    }
}

/// A grid backend stand-in whose deploys fail with `fail_with` on the nodes in `bad`, and
/// which records the node of every deploy.
struct FailsOn {
    bad: Vec<u32>,
    fail_with: fn() -> BackendError,
    asked: Mutex<Vec<Option<u32>>>,
}

#[async_trait::async_trait]
impl ComputeBackend for FailsOn {
    fn kind(&self) -> &'static str {
        "opentofu"
    }
    async fn deploy_vm(
        &self,
        req: &hero_os_tfgrid_deployer_backends::VmRequest,
        _: OutputSink,
    ) -> Result<hero_os_tfgrid_deployer_backends::VmInfo, BackendError> {
        self.asked.lock().unwrap().push(req.node_id);
        if req.node_id.is_some_and(|n| self.bad.contains(&n)) {
            return Err((self.fail_with)());
        }
        Ok(hero_os_tfgrid_deployer_backends::VmInfo {
            name: req.name.clone(),
            backend: "opentofu".into(),
            ssh: hero_os_tfgrid_deployer_backends::SshTarget {
                host: "10.20.2.2".into(),
                port: 22,
                user: "root".into(),
            },
            private_ip: Some("10.20.2.2".into()),
            mycelium_ip: None,
            web_backend_url: "http://10.20.2.2:9988".into(),
            manifest_path: "/tmp/services.toml".into(),
            work_dir: "/tmp".into(),
            env_file: None,
            node_id: req.node_id,
            backend_id: None,
            secret_store: Default::default(),
        })
    }
    async fn get_vm(
        &self,
        _: &hero_os_tfgrid_deployer_backends::ResourceName,
    ) -> Result<Option<hero_os_tfgrid_deployer_backends::VmInfo>, BackendError> {
        Ok(None)
    }
    async fn remains(
        &self,
        _: &hero_os_tfgrid_deployer_backends::ResourceName,
    ) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }
    async fn delete_vm(
        &self,
        _: &hero_os_tfgrid_deployer_backends::ResourceName,
        _: OutputSink,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    async fn deploy_gateway(
        &self,
        _: &hero_os_tfgrid_deployer_backends::GatewayRequest,
        _: OutputSink,
    ) -> Result<hero_os_tfgrid_deployer_backends::GatewayInfo, BackendError> {
        Err(BackendError::Config("not in this test".into()))
    }
    async fn get_gateway(
        &self,
        _: &hero_os_tfgrid_deployer_backends::ResourceName,
    ) -> Result<Option<hero_os_tfgrid_deployer_backends::GatewayInfo>, BackendError> {
        Ok(None)
    }
    async fn delete_gateway(
        &self,
        _: &hero_os_tfgrid_deployer_backends::ResourceName,
        _: OutputSink,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    async fn inventory(
        &self,
    ) -> Result<Vec<hero_os_tfgrid_deployer_backends::Resource>, BackendError> {
        Ok(Vec::new())
    }
}

/// select_node, then deploy_vm attempts as the runner makes them (same context), against the
/// gridproxy stand-in and a backend failing on `bad` nodes. Returns each deploy_vm result,
/// the nodes the backend was asked for, the final context and the facts recorded.
async fn select_then_deploy(
    bad: Vec<u32>,
    fail_with: fn() -> BackendError,
    pinned: Option<u32>,
    attempts: u32,
) -> (
    Vec<Result<String, steps::StepError>>,
    Vec<Option<u32>>,
    JobContext,
    Vec<String>,
) {
    let url = gridproxy().await;
    let deployer = Deployer {
        db: Db::open_in_memory().unwrap(),
        secrets: Arc::new(MemorySecretStore::new()),
        forge: Arc::new(FakeForge::new()),
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
        settings: Arc::new(CoreSettings {
            email_domain: "x.test".into(),
            user_token_scopes: Vec::new(),
        }),
    };
    let mut cfg = ProvisionConfig {
        backend: "opentofu".into(),
        ..Default::default()
    };
    cfg.grid.candidate_nodes = vec![8, 13];
    let env = StepEnv {
        users: deployer,
        agent: Arc::new(SshHttpAgent),
        nodes: Ok(Arc::new(GridProxyClient::with_base_url(url).unwrap())),
        cfg,
        bootstrap_script: String::new(),
    };
    let backend = Arc::new(FailsOn {
        bad,
        fail_with,
        asked: Mutex::new(Vec::new()),
    });
    let (job, _) = store::as_inserted(
        &store::NewJob {
            user_id: 1,
            forge_username: "alice",
            kind: JobKind::Provision,
            backend: "opentofu",
            actor: "test",
            options_json: "{}",
            context_json: "{}",
            steps: steps::PROVISION_STEPS,
            now_ms: 0,
        },
        1,
    );
    let options = ProvisionOptions {
        node_id: pinned,
        ..Default::default()
    };
    let (kept, key) = (Kept::default(), steps::KeyCache::new());
    let mut ctx = JobContext {
        public_key: Some("ssh-ed25519 AAAA test".into()),
        key_fingerprint: Some("SHA256:test".into()),
        vm_id: Some(1),
        ..Default::default()
    };
    let mut results = Vec::new();
    for (name, index, attempt) in
        std::iter::once(("select_node", 3, 1)).chain((1..=attempts).map(|a| ("deploy_vm", 4, a)))
    {
        let cx = StepCx {
            job: &job,
            options: &options,
            at: StepAt {
                index,
                count: 10,
                name: steps::by_name(name).unwrap().name(),
            },
            attempt,
            started: tokio::time::Instant::now(),
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(30),
            env: &env,
            backend: Ok(backend.clone() as Arc<dyn ComputeBackend>),
            keys: &NoKeys,
            records: &kept,
            key: &key,
        };
        let r = steps::by_name(name).unwrap().run(&cx, &mut ctx).await;
        if name == "select_node" {
            r.unwrap();
        } else {
            results.push(r);
        }
    }
    let asked = backend.asked.lock().unwrap().clone();
    let facts = kept.facts.into_inner().unwrap();
    (results, asked, ctx, facts)
}

fn rejected() -> BackendError {
    BackendError::Rejected {
        op: "deploy".into(),
        detail: "node 8: failed to deploy zmachine".into(),
    }
}

fn config_error() -> BackendError {
    BackendError::Config("no TFGrid mnemonic".into())
}

#[tokio::test]
async fn a_deploy_failing_on_its_node_excludes_it_and_the_retry_selects_another() {
    let (results, asked, ctx, facts) = select_then_deploy(vec![8], rejected, None, 2).await;
    assert_eq!(
        asked,
        vec![Some(8), Some(13)],
        "first the best node, then the next"
    );
    assert_eq!(results[0].as_ref().unwrap_err().code, "backend.rejected");
    let done = results[1].as_ref().unwrap();
    assert!(done.contains("node 13"), "{done}");
    assert_eq!(ctx.node_id, Some(13));
    assert_eq!(ctx.node_domain.as_deref(), Some("node13.grid.tf"));
    assert_eq!(ctx.excluded_nodes, vec![8]);
    assert!(
        facts
            .iter()
            .any(|f| f.starts_with("NodeExcluded") && f.contains("[8]")),
        "the exclusion is persisted for a retry_job: {facts:?}"
    );
    // Every candidate failed: the third attempt has nowhere left to go, and says so.
    let (results, asked, ctx, _) = select_then_deploy(vec![8, 13], rejected, None, 3).await;
    assert_eq!(asked, vec![Some(8), Some(13)]);
    let err = results[2].as_ref().unwrap_err();
    assert_eq!(err.code, "select.no_candidate", "{err}");
    assert!(
        err.message.contains("node 8") && err.message.contains("node 13"),
        "{err}"
    );
    assert_eq!(ctx.excluded_nodes, vec![8, 13]);
}

#[tokio::test]
async fn a_failure_not_about_the_node_or_a_pinned_node_keeps_the_node() {
    // Ours (configuration): the same node is tried again.
    let (results, asked, ctx, facts) = select_then_deploy(vec![8], config_error, None, 2).await;
    assert_eq!(asked, vec![Some(8), Some(8)]);
    assert!(results.iter().all(|r| r.is_err()));
    assert_eq!(ctx.node_id, Some(8));
    assert!(ctx.excluded_nodes.is_empty());
    assert!(
        !facts.iter().any(|f| f.starts_with("NodeExcluded")),
        "{facts:?}"
    );
    // Pinned by the request: the operator chose it; never swapped behind their back.
    let (_, asked, ctx, _) = select_then_deploy(vec![8], rejected, Some(8), 2).await;
    assert_eq!(asked, vec![Some(8), Some(8)]);
    assert!(ctx.excluded_nodes.is_empty());
}
