//! Benchmark of the dashboard (figures in docs/benchmarks/admin.md). Ignored by default:
//!
//! ```text
//! cargo test -p hero_os_tfgrid_deployer_admin --release --test bench -- --ignored --nocapture
//! ```
//!
//! 1. Users page with 10,000 users: server time of `GET /users` (first page, a prefix search, a
//!    deep cursor page), measured around the router (handler + every SDK call to the real
//!    deployer server), p50/p95 over 200 requests each. Users are seeded straight into the
//!    server's sqlite: creating 10,000 Forge accounts is not what is measured.
//! 2. Page weight: HTML of the 50-row users page plus every asset it loads.
//! 3. Live progress delay: real deploys on the local backend watched in headless Chromium; per job
//!    event, arrival in the browser (SSE) minus arrival at a direct SDK long-poll follower in this
//!    process (same host clock), and the raw `arrival - event.at_ms`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::Request;
use fantoccini::Locator;
use hero_os_tfgrid_deployer_admin::auth::AuthMode;
use hero_os_tfgrid_deployer_admin::{assets, router};
use hero_os_tfgrid_deployer_sdk::jobs::{JobEventsParams, ProvisionVmParams};
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::ListUsersParams;
use http_body_util::BodyExt;
use support::{poll, Chromedriver, Stack};
use tower::ServiceExt;

const USERS: usize = 10_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn seed(stack: &Stack) {
    let mut db = rusqlite::Connection::open(stack.root.join("data/state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT INTO users(forge_username, display_name, email, forge_user_id, forge_created, \
                 forge_token_set, initial_password_held, setup_state, vm_status, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, 1, 1, 0, 'active', ?5, ?6, ?6)",
            )
            .unwrap();
        let statuses = ["no_vm", "ready", "failed", "decommissioned", "provisioning"];
        let t0 = 1_795_000_000i64;
        for i in 0..USERS {
            let name = format!("user{i:05}");
            st.execute(rusqlite::params![
                name,
                format!("Demo User {i}"),
                format!("{name}@nomail.demo.ourworld.tf"),
                100_000 + i as i64,
                statuses[i % statuses.len()],
                t0 + i as i64
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

async fn time_get(app: &axum::Router, path: &str, n: usize) -> (f64, f64, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut size = 0;
    for i in 0..n + 10 {
        let req = Request::get(path)
            .header("x-hero-user", "bench")
            .body(Body::empty())
            .unwrap();
        let t = Instant::now();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let el = t.elapsed().as_secs_f64() * 1000.0;
        size = body.len();
        if i >= 10 {
            ms.push(el); // after 10 warm-up requests
        }
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (pct(&ms, 0.5), pct(&ms, 0.95), size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture (ideally --release)"]
async fn dashboard_benchmark() {
    let stack = Stack::start_with(&[("HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN", "127.0.0.1:0")]).await;
    stack.set_allowlist("bench,dev-admin").await;
    seed(&stack);
    let total = stack
        .client
        .list_users(&ListUsersParams::default())
        .await
        .unwrap()
        .total;
    assert_eq!(total as usize, USERS);
    let mut report = serde_json::Map::new();

    // 1. Server time.
    let app = router(stack.state(AuthMode::Headers));
    let mut cursor = None;
    for _ in 0..100 {
        let page = stack
            .client
            .list_users(&ListUsersParams {
                cursor: cursor.clone(),
                limit: Some(50),
                ..Default::default()
            })
            .await
            .unwrap();
        cursor = page.next_cursor;
    }
    let deep = format!(
        "/users?{}",
        serde_urlencoded::to_string([("cursor", cursor.unwrap()), ("page", "101".into())]).unwrap()
    );
    for (name, path) in [
        ("first_page", "/users".to_owned()),
        ("prefix_search", "/users?q=user05".to_owned()),
        ("page_101", deep),
    ] {
        let (p50, p95, size) = time_get(&app, &path, 200).await;
        println!("users {name}: p50 {p50:.2} ms, p95 {p95:.2} ms, html {size} B");
        report.insert(
            format!("users_{name}"),
            serde_json::json!({"p50_ms": p50, "p95_ms": p95, "html_bytes": size}),
        );
    }

    // 2. Page weight.
    let req = Request::get("/users")
        .header("x-hero-user", "bench")
        .body(Body::empty())
        .unwrap();
    let html = app
        .clone()
        .oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len();
    let total_bytes = html + assets::CSS.len() + assets::JS.len() + assets::ICON.len();
    println!(
        "page weight: html {html} B + css {} B + js {} B + icon {} B = {total_bytes} B",
        assets::CSS.len(),
        assets::JS.len(),
        assets::ICON.len()
    );
    report.insert(
        "page_weight".into(),
        serde_json::json!({"html": html, "css": assets::CSS.len(), "js": assets::JS.len(), "icon": assets::ICON.len(), "total": total_bytes}),
    );

    // 3. Live progress delay, in headless Chromium against the dashboard binary (dev mode, loopback).
    let (_admin, url) = stack.start_admin(&["--auth-mode", "dev", "--no-socket"]);
    let driver = Chromedriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let c = support::browser(&driver, profile.path()).await;
    let follower: Arc<Mutex<HashMap<(i64, i64), i64>>> = Arc::default();
    let mut browser_rows = Vec::new();
    for i in 0..3 {
        let user = stack
            .client
            .create_user(&format!("live{i}"), None, None)
            .await
            .unwrap();
        c.goto(&format!("{url}/users/{}", user.user_id))
            .await
            .unwrap();
        let job = stack
            .client
            .call::<methods::ProvisionVm>(&ProvisionVmParams {
                user_id: user.user_id,
                options: None,
            })
            .await
            .unwrap();
        // A direct SDK follower, for the reference arrival time of each event.
        let f = follower.clone();
        let client = stack.client.clone();
        let follow = tokio::spawn(async move {
            let mut after = 0;
            loop {
                let p = client
                    .call::<methods::JobEvents>(&JobEventsParams {
                        job_id: job.job_id,
                        after_seq: after,
                        wait_ms: 10_000,
                        limit: None,
                    })
                    .await
                    .unwrap();
                let t = now_ms();
                for e in &p.events {
                    f.lock().unwrap().insert((e.job_id, e.seq), t);
                }
                after = p.last_seq;
                if p.done {
                    break;
                }
            }
        });
        // The user page was loaded before the job existed: reload it to follow the job live.
        c.refresh().await.unwrap();
        poll(
            "the deploy to finish in the browser",
            Duration::from_secs(180),
            || async {
                let els = c
                    .find_all(Locator::Css("[data-final-state=succeeded]"))
                    .await
                    .ok()?;
                (!els.is_empty()).then_some(())
            },
        )
        .await;
        follow.await.unwrap();
        let rows = c
            .execute("return window.__heroArrivals || [];", vec![])
            .await
            .unwrap();
        browser_rows = rows.as_array().cloned().unwrap_or_default();
    }
    let _ = c.close().await;
    drop(driver);
    support::decommission_all(&stack.client).await;
    let follower = follower.lock().unwrap().clone();
    let mut added = Vec::new();
    let mut raw = Vec::new();
    for r in &browser_rows {
        let a: Vec<i64> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let (job, seq, at, arrival) = (a[0], a[1], a[2], a[3]);
        raw.push((arrival - at) as f64);
        if let Some(t) = follower.get(&(job, seq)) {
            added.push((arrival - t) as f64);
        }
    }
    added.sort_by(|a, b| a.partial_cmp(b).unwrap());
    raw.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!(!added.is_empty(), "no live events reached the browser");
    println!(
        "live delay over {} events: browser minus direct follower p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; raw (arrival - at_ms) p50 {:.0} ms, max {:.0} ms",
        added.len(),
        pct(&added, 0.5),
        pct(&added, 0.95),
        added[added.len() - 1],
        pct(&raw, 0.5),
        raw[raw.len() - 1]
    );
    report.insert(
        "live_delay".into(),
        serde_json::json!({
            "events": added.len(),
            "added_p50_ms": pct(&added, 0.5), "added_p95_ms": pct(&added, 0.95), "added_max_ms": added[added.len() - 1],
            "raw_p50_ms": pct(&raw, 0.5), "raw_max_ms": raw[raw.len() - 1],
        }),
    );
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/bench-admin.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
}
