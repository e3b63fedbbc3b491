//! Provisioning benchmark: 100 users through the real job orchestrator (sqlite on disk, real
//! runner, events, heartbeats, retries machinery) against a fast stand-in backend, Forge and VM
//! agent that each take an injected latency `L` per outside call, for several concurrency
//! limits `C`.
//!
//! All users are requested at once (as one JSON-RPC batch of `provision_vm` does) and every job
//! is followed by an in-process `job_events` long-poll (as `vm deploy --follow` does). Reports
//! the wall time against the target `1.2 × ceil(100 / C) × S` (S = 8 × L, the sum of the step
//! latencies of one job), the orchestrator's CPU time per user (getrusage of this process, user +
//! system, minus the latency injector's thread; SSH keys are generated before the timed part, so
//! key crypto is excluded; there is no sshd here), and the latency the calls really saw.
//!
//! `cargo bench -p hero_os_tfgrid_deployer_server --bench provision_bench`
//! Environment: `BENCH_USERS` (100), `BENCH_LATENCY_MS` (20), `BENCH_CONCURRENCY` ("1,4,10,25,100"),
//! `BENCH_TRACE` (set: print each round of outside calls, see `trace_report`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Placement, Resource,
    ResourceKind, ResourceName, SshTarget, VmInfo, VmRequest,
};
use hero_os_tfgrid_deployer_sdk::jobs::JobState;
use hero_os_tfgrid_deployer_server::clock::{OsRandom, SystemClock};
use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::forge::fake::{FakeForge, Mode};
use hero_os_tfgrid_deployer_server::provision::agent::{
    AttemptFn, HttpAnswer, LineFn, SshAccess, VmAgent,
};
use hero_os_tfgrid_deployer_server::provision::config::ProvisionConfig;
use hero_os_tfgrid_deployer_server::provision::faults::Faults;
use hero_os_tfgrid_deployer_server::provision::steps::StepError;
use hero_os_tfgrid_deployer_server::provision::{Parts, Provisioner};
use hero_os_tfgrid_deployer_server::service::{CoreSettings, Deployer};
use hero_secrets::MemorySecretStore;

/// Outside calls per provision job that carry the latency: forge_user (1), deploy_vm (1),
/// deploy_gateway (1), wait_ssh (1), push_manifest (1 upload), run_bootstrap (upload + run = 2),
/// verify_health (1). ssh_key, select_node (local: skipped) and finalize are bookkeeping.
const CALLS_PER_JOB: u32 = 8;

/// Injected latency of every stand-in call, measured: what the steps really waited for.
static WAITED_US: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
/// CPU time of the latency injector's thread, kept out of the orchestrator's figure.
static INJECTOR_CPU_NS: AtomicU64 = AtomicU64::new(0);

fn thread_cpu_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Waits `d` as an outside call would. tokio's timer wheel rounds every sleep up to the next
/// millisecond and wakes a little late (a 20 ms sleep took 21.2 ms with nothing else running),
/// which would bill the stand-in's timer error to the orchestrator; so one thread sleeps
/// precisely until the earliest deadline and wakes the waiting calls. A call wakes that thread
/// only when its deadline is earlier than the one the thread sleeps towards (the first call of
/// a round): waking it for every call cost a context switch each, taken from the orchestrator
/// in the middle of its bursts — a cost a real outside call does not have.
async fn lat(d: Duration) {
    let started = Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    injector().wait_until(started + d, tx);
    rx.await.unwrap();
    WAITED_US.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    CALLS.fetch_add(1, Ordering::Relaxed);
    if tracing_rounds() {
        TRACE.lock().unwrap().push((started, Instant::now()));
    }
}

/// `BENCH_TRACE=1`: when each round of outside calls (the k-th call of every job) started and
/// ended, and how long the last job took from the end of one call to the start of its next —
/// where the orchestrator's time goes on the critical path.
fn tracing_rounds() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("BENCH_TRACE").is_some())
}

static TRACE: Mutex<Vec<(Instant, Instant)>> = Mutex::new(Vec::new());

fn trace_report(t0: Instant, end: Instant, users: usize) {
    let mut calls = std::mem::take(&mut *TRACE.lock().unwrap());
    calls.sort_by_key(|c| c.0);
    let ms = |at: Instant| at.duration_since(t0).as_secs_f64() * 1000.0;
    let mut last_end: Option<Instant> = None;
    for (k, round) in calls.chunks(users).enumerate() {
        let first_start = round.iter().map(|c| c.0).min().unwrap();
        let last_start = round.iter().map(|c| c.0).max().unwrap();
        let first_end = round.iter().map(|c| c.1).min().unwrap();
        let end_of_round = round.iter().map(|c| c.1).max().unwrap();
        let gap = last_end
            .map(|e| {
                format!(
                    "{:.1} ms",
                    last_start.duration_since(e).as_secs_f64() * 1000.0
                )
            })
            .unwrap_or_else(|| "-".into());
        eprintln!(
            "call {}: started {:.1}..{:.1} ms, ended {:.1}..{:.1} ms; last start after previous last end: {gap}",
            k + 1,
            ms(first_start),
            ms(last_start),
            ms(first_end),
            ms(end_of_round)
        );
        last_end = Some(end_of_round);
    }
    eprintln!("last follower saw its job end at {:.1} ms", ms(end));
}

/// The latency injector: calls waiting for their deadline, and when its thread wakes next.
struct Injector {
    state: Mutex<Due>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct Due {
    calls: BTreeMap<(Instant, u64), tokio::sync::oneshot::Sender<()>>,
    seq: u64,
    /// When the thread wakes next; `None` while it waits for a call.
    next_wake: Option<Instant>,
}

impl Injector {
    fn wait_until(&self, at: Instant, done: tokio::sync::oneshot::Sender<()>) {
        let mut due = self.state.lock().unwrap();
        due.seq += 1;
        let seq = due.seq;
        due.calls.insert((at, seq), done);
        if due.next_wake.is_none_or(|next| at < next) {
            due.next_wake = Some(at);
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut due = self.state.lock().unwrap();
        loop {
            let now = Instant::now();
            let mut fired = Vec::new();
            while let Some(entry) = due.calls.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                fired.push(entry.remove());
            }
            due.next_wake = due.calls.keys().next().map(|(at, _)| *at);
            if !fired.is_empty() {
                drop(due);
                for done in fired {
                    let _ = done.send(());
                }
                INJECTOR_CPU_NS.store(thread_cpu_ns(), Ordering::Relaxed);
                due = self.state.lock().unwrap();
                continue;
            }
            INJECTOR_CPU_NS.store(thread_cpu_ns(), Ordering::Relaxed);
            due = match due.next_wake {
                Some(at) => {
                    self.wake
                        .wait_timeout(due, at.saturating_duration_since(now))
                        .unwrap()
                        .0
                }
                None => self.wake.wait(due).unwrap(),
            };
        }
    }
}

fn injector() -> &'static Injector {
    static INJECTOR: std::sync::OnceLock<&'static Injector> = std::sync::OnceLock::new();
    INJECTOR.get_or_init(|| {
        let injector: &'static Injector = Box::leak(Box::new(Injector {
            state: Mutex::new(Due::default()),
            wake: std::sync::Condvar::new(),
        }));
        std::thread::spawn(move || injector.run());
        injector
    })
}

/// An in-memory backend: every mutating call takes `L`; reads are free.
struct StandInBackend {
    latency: Duration,
    vms: Mutex<BTreeMap<String, VmInfo>>,
    gateways: Mutex<BTreeMap<String, GatewayInfo>>,
}

#[async_trait]
impl ComputeBackend for StandInBackend {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn placement(&self) -> Placement {
        Placement::ThisMachine
    }
    async fn deploy_vm(&self, req: &VmRequest, _: OutputSink) -> Result<VmInfo, BackendError> {
        lat(self.latency).await;
        let vm = VmInfo {
            name: req.name.clone(),
            backend: "local".into(),
            ssh: SshTarget {
                host: "127.0.0.1".into(),
                port: 22,
                user: "bench".into(),
            },
            private_ip: Some("127.0.0.1".into()),
            mycelium_ip: None,
            web_backend_url: "http://127.0.0.1:9988".into(),
            manifest_path: "/tmp/services.toml".into(),
            work_dir: "/tmp/work".into(),
            env_file: None,
            node_id: None,
            backend_id: None,
            secret_store: Default::default(),
        };
        self.vms
            .lock()
            .unwrap()
            .insert(req.name.to_string(), vm.clone());
        Ok(vm)
    }
    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError> {
        Ok(self.vms.lock().unwrap().get(&name.to_string()).cloned())
    }
    async fn remains(&self, _: &ResourceName) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }
    async fn delete_vm(&self, name: &ResourceName, _: OutputSink) -> Result<(), BackendError> {
        lat(self.latency).await;
        self.vms.lock().unwrap().remove(&name.to_string());
        Ok(())
    }
    async fn deploy_gateway(
        &self,
        req: &GatewayRequest,
        _: OutputSink,
    ) -> Result<GatewayInfo, BackendError> {
        lat(self.latency).await;
        let gw = GatewayInfo {
            name: req.name.clone(),
            fqdn: format!("{}.localhost", req.host_label),
            url: format!("http://{}.localhost:8088/", req.host_label),
            backend_url: req.backend_url.clone(),
            connect_addr: None,
        };
        self.gateways
            .lock()
            .unwrap()
            .insert(req.name.to_string(), gw.clone());
        Ok(gw)
    }
    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError> {
        Ok(self
            .gateways
            .lock()
            .unwrap()
            .get(&name.to_string())
            .cloned())
    }
    async fn delete_gateway(&self, name: &ResourceName, _: OutputSink) -> Result<(), BackendError> {
        lat(self.latency).await;
        self.gateways.lock().unwrap().remove(&name.to_string());
        Ok(())
    }
    async fn inventory(&self) -> Result<Vec<Resource>, BackendError> {
        let mut out = Vec::new();
        for name in self.vms.lock().unwrap().keys() {
            out.push(Resource {
                kind: ResourceKind::Vm,
                raw_name: name.clone(),
                name: ResourceName::parse(name),
                detail: String::new(),
            });
        }
        Ok(out)
    }
}

/// A stand-in for the VMs: SSH and HTTP answer after the latency; an anonymous `GET /` is what
/// the VM's SSO edge answers (a redirect to the Forge sign-in with the app made for that origin).
struct StandInAgent(Duration, Arc<FakeForge>);

#[async_trait]
impl VmAgent for StandInAgent {
    async fn wait_ssh(
        &self,
        _: &SshAccess<'_>,
        _: tokio::time::Instant,
        _: Duration,
        _: AttemptFn<'_>,
    ) -> Result<String, StepError> {
        lat(self.0).await;
        Ok("SHA256:standin".into())
    }
    async fn upload(
        &self,
        _: &SshAccess<'_>,
        _: &str,
        _: &[u8],
        _: Option<u32>,
    ) -> Result<(), StepError> {
        lat(self.0).await;
        Ok(())
    }
    async fn run(
        &self,
        _: &SshAccess<'_>,
        _: &str,
        on_line: LineFn<'_>,
    ) -> Result<Option<u32>, StepError> {
        lat(self.0).await;
        on_line("bootstrap: started", false);
        on_line("bootstrap: done", false);
        Ok(Some(0))
    }
    async fn run_with_stdin(
        &self,
        _: &SshAccess<'_>,
        _: &str,
        _: &[u8],
        _: LineFn<'_>,
    ) -> Result<Option<u32>, StepError> {
        lat(self.0).await;
        Ok(Some(0))
    }
    async fn http_status(&self, _: &str, _: Option<&str>) -> Result<u16, StepError> {
        lat(self.0).await;
        Ok(200)
    }
    async fn http_get(&self, url: &str, _: Option<&str>) -> Result<HttpAnswer, StepError> {
        lat(self.0).await;
        let origin = reqwest::Url::parse(url).unwrap().origin();
        let apps = self.1.apps.lock().unwrap();
        let app = apps.iter().map(|(a, _)| a).find(|a| {
            a.redirect_uris
                .iter()
                .any(|r| reqwest::Url::parse(r).is_ok_and(|r| r.origin() == origin))
        });
        let location = app.map(|a| {
            let mut to = reqwest::Url::parse(&format!(
                "{}/login/oauth/authorize",
                hero_os_tfgrid_deployer_server::forge::ForgeApi::url(self.1.as_ref())
                    .trim_end_matches('/')
            ))
            .unwrap();
            to.query_pairs_mut()
                .append_pair("client_id", &a.client_id)
                .append_pair("redirect_uri", &a.redirect_uris[0]);
            to.to_string()
        });
        Ok(HttpAnswer {
            status: if location.is_some() { 302 } else { 404 },
            location,
        })
    }
}

fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn injector_cpu_seconds() -> f64 {
    INJECTOR_CPU_NS.load(Ordering::Relaxed) as f64 / 1e9
}

struct Run {
    concurrency: usize,
    wall: Duration,
    /// Until every job was persisted and its worker started (part of `wall`).
    submitted: Duration,
    /// What one injected outside call really took, on average.
    measured_latency: Duration,
    target: Duration,
    cpu_per_user_ms: f64,
}

async fn run_once(users: usize, latency: Duration, concurrency: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let forge = Arc::new(
        FakeForge::with_mode(Mode::EveryoneExists)
            .with_delay(Arc::new(move || Box::pin(lat(latency)))),
    );
    let db = Db::open(&dir.path().join("state.db")).unwrap();
    let deployer = Deployer {
        db: db.clone(),
        secrets: Arc::new(MemorySecretStore::new()),
        // Every user is seeded: Forge only answers "exists", after L.
        forge: forge.clone(),
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
        settings: Arc::new(CoreSettings {
            email_domain: "bench.test".into(),
            user_token_scopes: Vec::new(),
        }),
    };
    let config = ProvisionConfig {
        max_concurrent_jobs: concurrency,
        ..ProvisionConfig::default()
    };
    let mut backends: BTreeMap<String, Arc<dyn ComputeBackend>> = BTreeMap::new();
    backends.insert(
        "local".into(),
        Arc::new(StandInBackend {
            latency,
            vms: Mutex::new(BTreeMap::new()),
            gateways: Mutex::new(BTreeMap::new()),
        }),
    );
    let p = Provisioner::new(Parts {
        deployer: deployer.clone(),
        config,
        backends,
        agent: Arc::new(StandInAgent(latency, forge.clone())),
        bootstrap_script: "#!/bin/sh\necho ok\n".into(),
        nodes: None,
        faults: Faults::none(),
        metrics: Arc::new(hero_os_tfgrid_deployer_server::metrics::NoMetrics),
    });
    let reaper = p.start().await.unwrap();

    // Seed complete users and their keys (key generation is crypto, excluded from the figure).
    let mut ids = Vec::new();
    for i in 0..users {
        let name = format!("bench{i}");
        let id = db
            .write(move |conn| -> Result<i64, hero_os_tfgrid_deployer_server::error::ServiceError> {
                conn.execute(
                    "INSERT INTO users(forge_username, email, forge_user_id, forge_created, setup_state, created_at, updated_at) \
                     VALUES (?1, ?1 || '@bench.test', 1, 1, 'active', 0, 0)",
                    [name],
                )?;
                Ok(conn.last_insert_rowid())
            })
            .await
            .unwrap();
        p.ensure_ssh_key(id, "bench").await.unwrap();
        ids.push(id);
    }

    let actor = hero_os_tfgrid_deployer_server::audit::Actor::local("bench");
    WAITED_US.store(0, Ordering::Relaxed);
    CALLS.store(0, Ordering::Relaxed);
    let cpu0 = cpu_seconds() - injector_cpu_seconds();
    let t0 = Instant::now();
    // All users requested at once, as one JSON-RPC batch of `provision_vm` calls does (the
    // server runs a batch's calls concurrently); the concurrency limit C then queues them.
    let jobs: Vec<_> = futures::future::join_all(ids.iter().map(|id| {
        p.provision_vm(
            &actor,
            hero_os_tfgrid_deployer_sdk::jobs::ProvisionVmParams {
                user_id: *id,
                options: None,
            },
        )
    }))
    .await
    .into_iter()
    .map(|job| job.unwrap().job_id)
    .collect();
    let submitted = t0.elapsed();
    // Every job followed to its end by a long-poll on `job_events`, as `vm deploy --follow`
    // does (each job has its own wake-up channel, so this costs one read per event).
    let followers = jobs.iter().map(|job_id| {
        let p = p.clone();
        let job_id = *job_id;
        async move {
            let mut after = 0;
            loop {
                let page = p
                    .job_events(hero_os_tfgrid_deployer_sdk::jobs::JobEventsParams {
                        job_id,
                        after_seq: after,
                        wait_ms: 30_000,
                        limit: None,
                    })
                    .await
                    .unwrap();
                after = page.last_seq;
                if page.done {
                    return page.job_state;
                }
            }
        }
    });
    let states = futures::future::join_all(followers).await;
    let wall = t0.elapsed();
    if tracing_rounds() {
        trace_report(t0, Instant::now(), users);
    }
    let cpu = cpu_seconds() - injector_cpu_seconds() - cpu0;
    assert!(
        states.iter().all(|s| *s == JobState::Succeeded),
        "{states:?}"
    );
    reaper.abort();
    p.shutdown();
    let rounds = users.div_ceil(concurrency) as u32;
    Run {
        concurrency,
        wall,
        submitted,
        measured_latency: Duration::from_micros(
            WAITED_US.load(Ordering::Relaxed) / CALLS.load(Ordering::Relaxed).max(1),
        ),
        target: latency * CALLS_PER_JOB * rounds * 6 / 5,
        cpu_per_user_ms: cpu * 1000.0 / users as f64,
    }
}

fn main() {
    let users: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let latency_ms: u64 = std::env::var("BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,4,10,25,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let latency = Duration::from_millis(latency_ms);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "provision benchmark: {users} users, L = {latency_ms} ms per outside call, S = {} × L = {} ms per job",
        CALLS_PER_JOB,
        latency_ms * u64::from(CALLS_PER_JOB)
    );
    println!("| C | wall time | of which submitting | target 1.2 × ceil({users}/C) × S | within target | orchestrator CPU per user | measured L |");
    println!("|---|---|---|---|---|---|---|");
    for c in levels {
        let r = runtime.block_on(run_once(users, latency, c));
        println!(
            "| {} | {:.3} s | {:.0} ms | {:.3} s | {} | {:.2} ms | {:.2} ms |",
            r.concurrency,
            r.wall.as_secs_f64(),
            r.submitted.as_secs_f64() * 1000.0,
            r.target.as_secs_f64(),
            if r.wall <= r.target { "yes" } else { "no" },
            r.cpu_per_user_ms,
            r.measured_latency.as_secs_f64() * 1000.0
        );
    }
}
