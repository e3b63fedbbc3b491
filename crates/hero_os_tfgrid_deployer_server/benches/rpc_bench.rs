//! RPC benchmark of the real server binary through the SDK over the unix socket:
//! `deployer.get_user` at concurrency 1 and 32, `deployer.list_users` (page of 50 out of 10,000),
//! cold start to `/health`, idle RSS. Run: `cargo bench -p hero_os_tfgrid_deployer_server --bench rpc_bench`.
//! Figures go to BENCHMARKS.md by hand; nothing here asserts on time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hero_os_tfgrid_deployer_sdk::types::{ListUsersParams, UserIdParams};
use hero_os_tfgrid_deployer_sdk::{methods, Client, Endpoint};
use hero_os_tfgrid_deployer_server::db::Db;

const USERS: i64 = 10_000;

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(root: &Path) -> Guard {
    Guard(
        Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer_server"))
            .env_clear()
            .env("HOME", root)
            .env("HERO_LOG", "warn")
            .env("HERO_SOCKET_DIR", root.join("sock"))
            .env("HERO_DEPLOYER_DATA_DIR", root.join("data"))
            .env("HERO_DEPLOYER_FORGE_URL", "http://127.0.0.1:9")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_health(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.health().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::task::yield_now().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn seed(root: &Path) {
    std::fs::create_dir_all(root.join("data")).unwrap();
    let db = Db::open(&root.join("data/state.db")).unwrap();
    drop(db);
    let conn = rusqlite::Connection::open(root.join("data/state.db")).unwrap();
    conn.execute_batch("BEGIN").unwrap();
    for i in 0..USERS {
        conn.execute(
            "INSERT INTO users(forge_username, email, forge_user_id, forge_created, forge_token_set, \
             initial_password_held, setup_state, created_at, updated_at) VALUES (?1, ?2, ?3, 1, 1, 1, 'active', 0, 0)",
            rusqlite::params![format!("user{i:05}"), format!("user{i:05}@nomail.test"), i + 1],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

async fn get_user_load(
    client: &Client,
    concurrency: usize,
    duration: Duration,
) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = t as i64;
                while start.elapsed() < duration {
                    let id = 1 + (i * 7919) % USERS;
                    let t0 = Instant::now();
                    client
                        .call::<methods::GetUser>(&UserIdParams { user_id: id })
                        .await
                        .unwrap();
                    lat.push(t0.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / secs, all)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        seed(root);
        let socket = root.join("sock/hero_os_tfgrid_deployer/rpc.sock");
        let client = Client::new(Endpoint::Unix(socket.clone()));

        // Cold start: spawn → /health OK, 10 runs, on a database of 10,000 users.
        let mut starts = Vec::new();
        for _ in 0..10 {
            let t0 = Instant::now();
            let mut g = spawn(root);
            let c = Client::new(Endpoint::Unix(socket.clone()));
            wait_health(&c).await;
            starts.push(t0.elapsed());
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(g.0.id().to_string())
                .status();
            let _ = g.0.wait();
        }
        starts.sort();

        let server = spawn(root);
        wait_health(&client).await;
        let pid = server.0.id();
        let idle_rss_before = rss_kib(pid);

        let (rps1, lat1) = get_user_load(&client, 1, Duration::from_secs(5)).await;
        let (rps32, lat32) = get_user_load(&client, 32, Duration::from_secs(5)).await;

        let mut list = Vec::new();
        let page = client
            .list_users(&ListUsersParams {
                limit: Some(50),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.total, USERS as u64);
        for i in 0..1000i64 {
            let after = format!("user{:05}", (i * 9973) % (USERS - 60));
            let cursor = base64_url(&after);
            let t0 = Instant::now();
            let page = client
                .list_users(&ListUsersParams {
                    limit: Some(50),
                    cursor: Some(cursor),
                    ..Default::default()
                })
                .await
                .unwrap();
            list.push(t0.elapsed());
            assert_eq!(page.users.len(), 50);
        }
        list.sort();
        let idle_rss_after = rss_kib(pid);

        println!("| measure | value |");
        println!("| --- | --- |");
        println!(
            "| cold start to /health OK (10,000 users), p50 / max | {:.1} ms / {:.1} ms |",
            ms(percentile(&starts, 0.5)),
            ms(*starts.last().unwrap())
        );
        println!(
            "| idle RSS after start / after load | {:.1} MiB / {:.1} MiB |",
            idle_rss_before as f64 / 1024.0,
            idle_rss_after as f64 / 1024.0
        );
        println!(
            "| get_user, concurrency 1 | {rps1:.0} req/s, p50 {:.3} ms, p99 {:.3} ms |",
            ms(percentile(&lat1, 0.5)),
            ms(percentile(&lat1, 0.99))
        );
        println!(
            "| get_user, concurrency 32 | {rps32:.0} req/s, p50 {:.3} ms, p99 {:.3} ms |",
            ms(percentile(&lat32, 0.5)),
            ms(percentile(&lat32, 0.99))
        );
        println!(
            "| list_users page of 50 of 10,000 (cursor) | p50 {:.3} ms, p99 {:.3} ms |",
            ms(percentile(&list, 0.5)),
            ms(percentile(&list, 0.99))
        );
        drop(server);
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
