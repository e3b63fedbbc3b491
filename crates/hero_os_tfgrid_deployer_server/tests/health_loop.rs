//! The health watch's periodic loop itself (the other health tests drive rounds with
//! `probe_now` / `check_health`): with `interval_secs` set, the loop probes on its own, again and
//! again, waits `interval + [0, jitter)` before each round, records a transition with its audit
//! line, and ends when the server's shutdown aborts it; interval 0 starts no loop.
//!
//! The loop runs on a real runtime with a real sqlite store; its waits go through an injected
//! [`Sleeper`] that hands each wait to the test and returns when the test releases it, and the
//! clock is one the test moves by exactly that wait. Nothing here sleeps to synchronise: the
//! loop asking for its next wait is the sign that the previous round has been recorded. The
//! only timeouts guard against a hang (a loop that never runs fails them, not passes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_fleet;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_sdk::jobs::HealthState;
use hero_os_tfgrid_deployer_server::clock::{Clock, OsRandom, Random};
use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::error::ServiceError;
use hero_os_tfgrid_deployer_server::fleet::health::{HealthConfig, HealthWatch, Sleeper};
use hero_os_tfgrid_deployer_server::provision::agent::{
    AttemptFn, HttpAnswer, LineFn, SshAccess, VmAgent,
};
use hero_os_tfgrid_deployer_server::provision::steps::StepError;
use support_fleet::{seed_ready_vms, ReadyVm};
use tokio::sync::{mpsc, oneshot};

/// A hang guard, not a timing assertion: a step of the loop that should come at once and has
/// not come within this is a failure.
const HANG: Duration = Duration::from_secs(30);

/// Hands every wait the loop asks for to the test, and returns when the test releases it.
struct GatedSleeper {
    waits: mpsc::UnboundedSender<(Duration, oneshot::Sender<()>)>,
}

#[async_trait]
impl Sleeper for GatedSleeper {
    async fn sleep(&self, wait: Duration) {
        let (release, released) = oneshot::channel();
        if self.waits.send((wait, release)).is_err() || released.await.is_err() {
            // The test is gone: never wake, so the loop cannot spin.
            std::future::pending::<()>().await;
        }
    }
}

/// The clock, moved by the test.
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Jitter draws: the scripted values first (each checked to be below the bound asked for),
/// then the OS's random numbers. Records every bound asked for.
struct ScriptedRandom {
    script: Mutex<Vec<u32>>,
    bounds: Mutex<Vec<u32>>,
}

impl Random for ScriptedRandom {
    fn fill(&self, buf: &mut [u8]) {
        OsRandom.fill(buf);
    }

    fn below(&self, bound: u32) -> u32 {
        self.bounds.lock().unwrap().push(bound);
        let next = {
            let mut script = self.script.lock().unwrap();
            (!script.is_empty()).then(|| script.remove(0))
        };
        match next {
            Some(v) => v.min(bound.saturating_sub(1)),
            None => OsRandom.below(bound),
        }
    }
}

/// The VMs' gateways: counts every probe; a host in `down` answers 502; a probe of the host in
/// `hold` decides its answer, says it started, and answers only once released.
#[derive(Default)]
struct StandInGateways {
    probes: Mutex<Vec<String>>,
    down: Mutex<BTreeSet<String>>,
    hold: Mutex<Option<Hold>>,
    /// How long every probe takes (none: at once), so probes of overlapping rounds overlap.
    linger: Option<Duration>,
    in_flight: AtomicUsize,
    /// The most probes in flight at once.
    peak: AtomicUsize,
}

struct Hold {
    host: String,
    started: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl VmAgent for StandInGateways {
    async fn wait_ssh(
        &self,
        _: &SshAccess<'_>,
        _: tokio::time::Instant,
        _: Duration,
        _: AttemptFn<'_>,
    ) -> Result<String, StepError> {
        Err(StepError::fatal(
            "test.no_ssh",
            "the health watch uses no SSH",
        ))
    }
    async fn upload(
        &self,
        _: &SshAccess<'_>,
        _: &str,
        _: &[u8],
        _: Option<u32>,
    ) -> Result<(), StepError> {
        Err(StepError::fatal(
            "test.no_ssh",
            "the health watch uses no SSH",
        ))
    }
    async fn run(
        &self,
        _: &SshAccess<'_>,
        _: &str,
        _: LineFn<'_>,
    ) -> Result<Option<u32>, StepError> {
        Err(StepError::fatal(
            "test.no_ssh",
            "the health watch uses no SSH",
        ))
    }
    async fn run_with_stdin(
        &self,
        _: &SshAccess<'_>,
        _: &str,
        _: &[u8],
        _: LineFn<'_>,
    ) -> Result<Option<u32>, StepError> {
        Err(StepError::fatal(
            "test.no_ssh",
            "the health watch uses no SSH",
        ))
    }
    async fn http_status(&self, url: &str, connect: Option<&str>) -> Result<u16, StepError> {
        Ok(self.http_get(url, connect).await?.status)
    }
    async fn http_get(&self, url: &str, _: Option<&str>) -> Result<HttpAnswer, StepError> {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        self.probes.lock().unwrap().push(url.to_owned());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        if let Some(linger) = self.linger {
            // Not synchronisation: only keeps the probe in flight while other rounds start theirs.
            tokio::time::sleep(linger).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let down = self.down.lock().unwrap().contains(&host);
        let held = {
            let hold = self.hold.lock().unwrap();
            hold.as_ref()
                .filter(|h| h.host == host)
                .map(|h| (h.started.clone(), h.release.clone()))
        };
        if let Some((started, release)) = held {
            started.notify_one();
            release.notified().await;
        }
        Ok(HttpAnswer {
            status: if down { 502 } else { 200 },
            location: None,
        })
    }
}

impl StandInGateways {
    fn probe_count(&self) -> usize {
        self.probes.lock().unwrap().len()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    vms: Vec<ReadyVm>,
    gateways: Arc<StandInGateways>,
    clock: Arc<TestClock>,
    random: Arc<ScriptedRandom>,
    cfg: HealthConfig,
}

const T0: i64 = 1_800_000_000;

async fn fixture(cfg: HealthConfig, script: Vec<u32>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("state.db")).unwrap();
    let vms = seed_ready_vms(
        &db,
        3,
        |i| ["alice", "bob", "carol"][i].to_owned(),
        |i| format!("http://{}.localhost:8088/", ["alice", "bob", "carol"][i]),
    )
    .await
    .unwrap();
    Fixture {
        _dir: dir,
        db,
        vms,
        gateways: Arc::new(StandInGateways::default()),
        clock: Arc::new(TestClock(AtomicI64::new(T0))),
        random: Arc::new(ScriptedRandom {
            script: Mutex::new(script),
            bounds: Mutex::new(Vec::new()),
        }),
        cfg,
    }
}

impl Fixture {
    fn watch(&self) -> Arc<HealthWatch> {
        Arc::new(HealthWatch::new(
            self.db.clone(),
            self.gateways.clone(),
            self.clock.clone(),
            self.random.clone(),
            self.cfg.clone(),
            "/health".into(),
        ))
    }

    /// `(username, health_state, health_since, health_checked_at, health_error)` of every VM.
    async fn health_rows(
        &self,
    ) -> Vec<(
        String,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    )> {
        self.db
            .call(|conn| -> Result<_, ServiceError> {
                Ok(conn
                    .prepare(
                        "SELECT forge_username, health_state, health_since, health_checked_at, health_error \
                         FROM vms ORDER BY vm_id",
                    )?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
            .unwrap()
    }

    /// `user`'s recorded `health_state`.
    async fn health_of(&self, user: &str) -> Option<String> {
        self.health_rows()
            .await
            .into_iter()
            .find(|r| r.0 == user)
            .and_then(|r| r.1)
    }

    /// `(actor, subject, outcome, at)` of every `vm.health` audit line, oldest first.
    async fn health_audit(&self) -> Vec<(String, String, String, i64)> {
        self.db
            .call(|conn| -> Result<_, ServiceError> {
                Ok(conn
                    .prepare(
                        "SELECT actor, subject, outcome, at FROM events WHERE action = 'vm.health' \
                         ORDER BY event_id",
                    )?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
            .unwrap()
    }
}

/// The next wait the loop asks for (it asks only once the previous round has been recorded).
async fn next_wait(
    waits: &mut mpsc::UnboundedReceiver<(Duration, oneshot::Sender<()>)>,
) -> (Duration, oneshot::Sender<()>) {
    tokio::time::timeout(HANG, waits.recv())
        .await
        .expect("the loop did not ask for its next wait")
        .expect("the loop ended")
}

fn cfg() -> HealthConfig {
    HealthConfig {
        interval_secs: 60,
        jitter_secs: 10,
        concurrency: 2,
        probe_deadline_ms: 5_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_probes_on_its_own_repeats_within_the_jitter_bound_records_a_transition_and_stops_on_shutdown(
) {
    // First waits: the smallest and the largest jitter; after that, the OS's random numbers.
    let f = fixture(cfg(), vec![0, u32::MAX]).await;
    let interval = Duration::from_secs(60);
    let bound = Duration::from_secs(10);
    let (tx, mut waits) = mpsc::unbounded_channel();
    let task = f
        .watch()
        .spawn_with(Arc::new(GatedSleeper { waits: tx }))
        .expect("interval 60 s starts the loop");

    // The first round waits for the jitter alone (a restart gives fresh verdicts at once):
    // nothing probed while that wait is pending.
    let (wait, release) = next_wait(&mut waits).await;
    assert_eq!(wait, Duration::ZERO, "jitter drawn 0");
    assert_eq!(f.gateways.probe_count(), 0);
    assert!(f.health_rows().await.iter().all(|r| r.1.is_none()));

    // Round 1, started by the loop alone: every ready VM probed and recorded healthy.
    let round1_at = T0 + wait.as_secs() as i64;
    f.clock.0.store(round1_at, Ordering::SeqCst);
    release.send(()).unwrap();
    let (wait, release) = next_wait(&mut waits).await;
    assert_eq!(
        wait,
        interval + bound - Duration::from_millis(1),
        "largest jitter"
    );
    assert_eq!(f.gateways.probe_count(), 3);
    let rows = f.health_rows().await;
    for (user, state, since, checked, error) in &rows {
        assert_eq!(state.as_deref(), Some("healthy"), "{user}");
        assert_eq!(
            (*since, *checked),
            (Some(round1_at), Some(round1_at)),
            "{user}"
        );
        assert_eq!(*error, None);
    }
    assert!(
        f.health_audit().await.is_empty(),
        "a first healthy is no news"
    );

    // bob's gateway answers 502: round 2 records the transition and audits it once.
    f.gateways
        .down
        .lock()
        .unwrap()
        .insert("bob.localhost".into());
    let round2_at = round1_at + wait.as_secs() as i64;
    f.clock.0.store(round2_at, Ordering::SeqCst);
    release.send(()).unwrap();
    let (mut wait, mut release) = next_wait(&mut waits).await;
    assert_eq!(f.gateways.probe_count(), 6);
    let rows = f.health_rows().await;
    let bob = rows.iter().find(|r| r.0 == "bob").unwrap();
    assert_eq!(bob.1.as_deref(), Some("unreachable"));
    assert_eq!((bob.2, bob.3), (Some(round2_at), Some(round2_at)));
    assert!(bob.4.as_deref().unwrap().contains("HTTP 502"), "{bob:?}");
    assert!(rows
        .iter()
        .filter(|r| r.0 != "bob")
        .all(|r| r.1.as_deref() == Some("healthy") && r.2 == Some(round1_at)));
    assert_eq!(
        f.health_audit().await,
        [(
            "system:health".to_owned(),
            "user:bob".to_owned(),
            HealthState::Unreachable.as_str().to_owned(),
            round2_at
        )]
    );

    // It keeps going: 30 more rounds, each after a wait within [interval, interval + jitter),
    // and bob's state does not flap or re-audit.
    let mut now = round2_at;
    for round in 3..=32 {
        assert!(
            wait >= interval && wait < interval + bound,
            "round {round}: wait {wait:?}"
        );
        now += wait.as_secs() as i64;
        f.clock.0.store(now, Ordering::SeqCst);
        release.send(()).unwrap();
        (wait, release) = next_wait(&mut waits).await;
        assert_eq!(f.gateways.probe_count(), 3 * round);
    }
    assert_eq!(f.health_audit().await.len(), 1);
    let rows = f.health_rows().await;
    let bob = rows.iter().find(|r| r.0 == "bob").unwrap();
    assert_eq!((bob.2, bob.3), (Some(round2_at), Some(now)));
    // Every wait drew its jitter below the configured bound, in milliseconds.
    let bounds = f.random.bounds.lock().unwrap().clone();
    assert_eq!(bounds.len(), 33);
    assert!(bounds.iter().all(|b| *b == 10_000), "{bounds:?}");

    // Server shutdown aborts the task (as `lib.rs` does): the loop ends — its sleeper, and so
    // the sender of its waits, is dropped — even with a wait pending, and probes no more.
    drop(release);
    task.abort();
    let ended = tokio::time::timeout(HANG, task)
        .await
        .expect("the loop did not end");
    assert!(ended.unwrap_err().is_cancelled());
    assert!(
        tokio::time::timeout(HANG, waits.recv())
            .await
            .expect("the wait channel did not close")
            .is_none(),
        "no wait after shutdown"
    );
    assert_eq!(f.gateways.probe_count(), 3 * 32);
    assert_eq!(f.vms.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_zero_starts_no_loop_and_jitter_zero_starts_at_once_then_waits_exactly_the_interval(
) {
    let off = fixture(
        HealthConfig {
            interval_secs: 0,
            ..cfg()
        },
        Vec::new(),
    )
    .await;
    let (tx, mut waits) = mpsc::unbounded_channel();
    assert!(off
        .watch()
        .spawn_with(Arc::new(GatedSleeper { waits: tx }))
        .is_none());
    // The sleeper was dropped unused: no wait was ever asked for, nothing probed.
    assert!(waits.recv().await.is_none());
    assert_eq!(off.gateways.probe_count(), 0);
    // On demand still works with the loop off (what `check_health` does).
    let round = off.watch().probe_now(None).await.unwrap();
    assert_eq!((round.probed, off.gateways.probe_count()), (3, 3));

    let exact = fixture(
        HealthConfig {
            interval_secs: 5,
            jitter_secs: 0,
            ..cfg()
        },
        Vec::new(),
    )
    .await;
    let (tx, mut waits) = mpsc::unbounded_channel();
    let task = exact
        .watch()
        .spawn_with(Arc::new(GatedSleeper { waits: tx }))
        .unwrap();
    for round in 1..=3 {
        let (wait, release) = next_wait(&mut waits).await;
        let first = if round == 1 { 0 } else { 5 };
        assert_eq!(wait, Duration::from_secs(first), "round {round}");
        assert_eq!(exact.gateways.probe_count(), 3 * (round - 1));
        release.send(()).unwrap();
    }
    let _ = next_wait(&mut waits).await;
    assert_eq!(exact.gateways.probe_count(), 9);
    assert!(
        exact.random.bounds.lock().unwrap().is_empty(),
        "no draw without jitter"
    );
    task.abort();
}

/// A `vm check` during a periodic round does not wait for it, and the round's older verdict,
/// recorded after the check's newer one, neither undoes it nor audits the change again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_check_does_not_wait_and_a_stale_verdict_changes_nothing() {
    let f = fixture(cfg(), vec![]).await;
    let watch = f.watch();
    // All healthy first.
    let first = watch.probe_now(None).await.unwrap();
    assert_eq!((first.probed, first.transitions.len()), (3, 0));
    // A round whose probe of bob hangs (bob still healthy as it was sent)…
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    *f.gateways.hold.lock().unwrap() = Some(Hold {
        host: "bob.localhost".into(),
        started: started.clone(),
        release: release.clone(),
    });
    f.clock.0.store(T0 + 60, Ordering::SeqCst);
    let slow = tokio::spawn({
        let watch = watch.clone();
        async move { watch.probe_now(None).await.unwrap() }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the round probes bob");
    *f.gateways.hold.lock().unwrap() = None;
    // …while bob goes down and an operator checks him: answered at once, audited once.
    f.gateways
        .down
        .lock()
        .unwrap()
        .insert("bob.localhost".into());
    f.clock.0.store(T0 + 70, Ordering::SeqCst);
    let bob = f.vms[1].user_id;
    let check = tokio::time::timeout(Duration::from_secs(10), watch.probe_now(Some(bob)))
        .await
        .expect("a check does not wait for the round in flight")
        .unwrap();
    assert_eq!(
        check.transitions,
        vec![("bob".to_owned(), HealthState::Unreachable)]
    );
    // The round ends with its stale "healthy" for bob: dropped, not recorded, not audited.
    release.notify_one();
    let round = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the round ends")
        .unwrap();
    assert_eq!(round.transitions, vec![]);
    let rows = f.health_rows().await;
    assert_eq!(rows[1].0, "bob");
    assert_eq!(rows[1].1.as_deref(), Some("unreachable"), "{rows:?}");
    assert_eq!(rows[1].3, Some(T0 + 70), "checked when the check was sent");
    let audit = f.health_audit().await;
    assert_eq!(
        audit,
        vec![(
            "system:health".to_owned(),
            "user:bob".to_owned(),
            "unreachable".to_owned(),
            T0 + 70
        )]
    );
}

/// A verdict from before a backward step of the wall clock is taken, not dropped as a slow round's: dropped,
/// every verdict until the clock caught up was lost, and a VM that went down meanwhile read healthy. A verdict a
/// little older than the recorded one (a slow round) is still dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backward_clock_step_does_not_freeze_the_verdicts() {
    let f = fixture(HealthConfig::default(), Vec::new()).await;
    let watch = f.watch();
    watch.probe_now(None).await.unwrap();
    assert_eq!(f.health_of("alice").await.as_deref(), Some("healthy"));
    f.gateways
        .down
        .lock()
        .unwrap()
        .insert("alice.localhost".into());
    f.clock.0.store(T0 - 20, Ordering::SeqCst);
    watch.probe_now(None).await.unwrap();
    assert_eq!(
        f.health_of("alice").await.as_deref(),
        Some("healthy"),
        "a slow round's older verdict is dropped"
    );
    f.clock.0.store(T0 - 3600, Ordering::SeqCst);
    watch.probe_now(None).await.unwrap();
    assert_eq!(
        f.health_of("alice").await.as_deref(),
        Some("unreachable"),
        "after the clock stepped back an hour"
    );
}

/// Four callers asking for a full round at once probe at most `concurrency` VMs at a time between them. Before,
/// each round had its own bound, so overlapping `check_health` calls each added a full round of probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_rounds_share_one_bound_on_probes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("state.db")).unwrap();
    seed_ready_vms(
        &db,
        24,
        |i| format!("u{i}"),
        |i| format!("http://u{i}.localhost:8088/"),
    )
    .await
    .unwrap();
    let gateways = Arc::new(StandInGateways {
        linger: Some(Duration::from_millis(5)),
        ..StandInGateways::default()
    });
    let watch = Arc::new(HealthWatch::new(
        db,
        gateways.clone(),
        Arc::new(TestClock(AtomicI64::new(T0))),
        Arc::new(OsRandom),
        HealthConfig {
            concurrency: 3,
            ..HealthConfig::default()
        },
        "/health".into(),
    ));
    let rounds: Vec<_> = (0..4)
        .map(|_| {
            let w = watch.clone();
            tokio::spawn(async move { w.probe_now(None).await.unwrap().probed })
        })
        .collect();
    for r in rounds {
        assert_eq!(tokio::time::timeout(HANG, r).await.unwrap().unwrap(), 24);
    }
    let peak = gateways.peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak {peak}");
}
