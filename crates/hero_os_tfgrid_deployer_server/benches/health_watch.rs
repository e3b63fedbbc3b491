//! Health-watch benchmark: one probe round over 1,000 ready VMs, through the server's real watch
//! (`HealthWatch::probe_now`, what every periodic round runs) and its real agent (`SshHttpAgent`,
//! one HTTP GET per VM) against a **stand-in gateway**: a local hyper server, in a child process
//! of this binary, answering `GET /health` for 1,000 distinct host names
//! (`http://u0000.localhost:<port>/` … — the local backend's gateway URL form, which the watch
//! connects to on the loopback). The VMs are seeded in a sqlite store on disk through the
//! provision store functions (`tests/support_fleet`).
//!
//! Reports, per concurrency and scenario, the round's wall time and the server's CPU time per
//! round (getrusage of this process, user + system: the watch, the agent, tokio and the sqlite
//! threads; the stand-in gateway is another process, reported apart from /proc). Scenarios: all
//! healthy; every 10th VM answering 502; every 100th (and every 10th) answering only after the
//! probe deadline. The first round after a scenario change carries its transitions (row and
//! audit writes) and is reported apart from the steady rounds.
//!
//! `cargo bench -p hero_os_tfgrid_deployer_server --bench health_watch`
//! Environment: `BENCH_VMS` (1000), `BENCH_CONCURRENCY` ("16,64"), `BENCH_ROUNDS` (steady
//! rounds per scenario, 5), `BENCH_DEADLINE_MS` (5000), `BENCH_SLOW` (set: also the 10 % silent
//! scenario, ~31 s a round at concurrency 16).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support_fleet/mod.rs"]
mod support_fleet;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hero_os_tfgrid_deployer_server::clock::{OsRandom, SystemClock};
use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::fleet::health::{HealthConfig, HealthWatch, Round};
use hero_os_tfgrid_deployer_server::provision::agent::SshHttpAgent;

const STAND_IN_FLAG: &str = "--stand-in-gateway";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- the stand-in gateway (child process) ----

/// What the stand-in answers, set by the parent between rounds: VM `i` answers 502 when
/// `i % bad_every == 0`, and only after `hold_ms` when `i % silent_every == 0` (0: none).
static BAD_EVERY: AtomicU64 = AtomicU64::new(0);
static SILENT_EVERY: AtomicU64 = AtomicU64::new(0);
static HOLD_MS: AtomicU64 = AtomicU64::new(0);

/// The VM index in a `Host: u0042.localhost:port` header.
fn vm_index(req: &hyper::Request<hyper::body::Incoming>) -> Option<u64> {
    let host = req.headers().get(hyper::header::HOST)?.to_str().ok()?;
    host.strip_prefix('u')?.split('.').next()?.parse().ok()
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    let every = |n: &AtomicU64, i: u64| {
        let n = n.load(Ordering::Relaxed);
        n > 0 && i.is_multiple_of(n)
    };
    let i = vm_index(&req);
    let status = match i {
        _ if req.uri().path() != "/health" => 404,
        None => 421,
        Some(i) if every(&SILENT_EVERY, i) => {
            tokio::time::sleep(Duration::from_millis(HOLD_MS.load(Ordering::Relaxed))).await;
            200
        }
        Some(i) if every(&BAD_EVERY, i) => 502,
        Some(_) => 200,
    };
    let body = if status == 200 {
        "ok\n"
    } else {
        "stand-in error\n"
    };
    let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    Ok(resp)
}

/// The child: prints its port, then serves; stdin lines `set <bad_every> <silent_every>
/// <hold_ms>` change the answers (acknowledged with `ok`); stdin closing ends it.
fn stand_in_gateway() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        std::thread::spawn(|| {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let v: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|s| s.parse().ok())
                    .collect();
                if let [bad, silent, hold] = v[..] {
                    BAD_EVERY.store(bad, Ordering::Relaxed);
                    SILENT_EVERY.store(silent, Ordering::Relaxed);
                    HOLD_MS.store(hold, Ordering::Relaxed);
                }
                println!("ok");
                std::io::stdout().flush().unwrap();
            }
            std::process::exit(0);
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(answer),
                    )
                    .await;
            });
        }
    });
}

struct Gateway {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Gateway {
    fn start() -> Gateway {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg(STAND_IN_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap();
        Gateway {
            child,
            stdin,
            stdout,
            port,
        }
    }

    fn set(&mut self, bad_every: u64, silent_every: u64, hold_ms: u64) {
        writeln!(self.stdin, "set {bad_every} {silent_every} {hold_ms}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }

    /// User + system CPU seconds of the stand-in so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap_or(100) as f64;
        ticks / hz
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the measurement ----

fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

struct Measured {
    wall: Duration,
    cpu: f64,
    gateway_cpu: f64,
    round: Round,
}

async fn one_round(watch: &HealthWatch, gateway: &Gateway) -> Measured {
    let g0 = gateway.cpu_seconds();
    let c0 = cpu_seconds();
    let t0 = Instant::now();
    let round = watch.probe_now(None).await.unwrap();
    let wall = t0.elapsed();
    let cpu = cpu_seconds() - c0;
    Measured {
        wall,
        cpu,
        gateway_cpu: gateway.cpu_seconds() - g0,
        round,
    }
}

struct Scenario {
    name: &'static str,
    bad_every: u64,
    silent_every: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    if std::env::args().any(|a| a == STAND_IN_FLAG) {
        stand_in_gateway();
        return;
    }
    let vms: usize = env_or("BENCH_VMS", 1000);
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let deadline_ms: u64 = env_or("BENCH_DEADLINE_MS", 5000);
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut scenarios = vec![
        Scenario {
            name: "all healthy",
            bad_every: 0,
            silent_every: 0,
        },
        Scenario {
            name: "10 % answer 502",
            bad_every: 10,
            silent_every: 0,
        },
        Scenario {
            name: "1 % silent past the deadline",
            bad_every: 0,
            silent_every: 100,
        },
    ];
    if std::env::var_os("BENCH_SLOW").is_some() {
        scenarios.push(Scenario {
            name: "10 % silent past the deadline",
            bad_every: 0,
            silent_every: 10,
        });
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut gateway = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("state.db")).unwrap();
    let port = gateway.port;
    let seeded = runtime
        .block_on(support_fleet::seed_ready_vms(
            &db,
            vms,
            |i| format!("u{i:04}"),
            |i| format!("http://u{i:04}.localhost:{port}/"),
        ))
        .unwrap();
    assert_eq!(seeded.len(), vms);

    println!(
        "health-watch benchmark: {vms} ready VMs behind a stand-in gateway (one local hyper server, \
         {vms} host names), probe deadline {deadline_ms} ms, {rounds} steady rounds per scenario"
    );
    println!("| concurrency | scenario | round wall, median (min–max) | server CPU per round, median | per probe | first round after the change: wall / CPU / transitions | stand-in gateway CPU per round |");
    println!("|---|---|---|---|---|---|---|");
    for &concurrency in &levels {
        let watch = HealthWatch::new(
            db.clone(),
            Arc::new(SshHttpAgent),
            Arc::new(SystemClock),
            Arc::new(OsRandom),
            HealthConfig {
                interval_secs: 0,
                jitter_secs: 0,
                concurrency,
                probe_deadline_ms: deadline_ms,
            },
            "/health".into(),
        );
        for s in &scenarios {
            gateway.set(s.bad_every, s.silent_every, deadline_ms + 1000);
            let first = runtime.block_on(one_round(&watch, &gateway));
            let steady: Vec<Measured> = (0..rounds)
                .map(|_| runtime.block_on(one_round(&watch, &gateway)))
                .collect();
            let expected_down = [s.bad_every, s.silent_every]
                .iter()
                .filter(|n| **n > 0)
                .map(|n| vms.div_ceil(*n as usize))
                .sum::<usize>();
            for m in steady.iter().chain([&first]) {
                assert_eq!(m.round.probed, vms);
                assert_eq!(m.round.unreachable, expected_down, "{}", s.name);
            }
            let walls: Vec<f64> = steady.iter().map(|m| m.wall.as_secs_f64()).collect();
            let cpu = median(steady.iter().map(|m| m.cpu).collect());
            let gw = median(steady.iter().map(|m| m.gateway_cpu).collect());
            let (lo, hi) = walls
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
            println!(
                "| {concurrency} | {} | {:.3} s ({:.3}–{:.3}) | {:.0} ms | {:.0} µs | {:.3} s / {:.0} ms / {} | {:.0} ms |",
                s.name,
                median(walls.clone()),
                lo,
                hi,
                cpu * 1000.0,
                cpu * 1e6 / vms as f64,
                first.wall.as_secs_f64(),
                first.cpu * 1000.0,
                first.round.transitions.len(),
                gw * 1000.0,
            );
        }
    }
}
