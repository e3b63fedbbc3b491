//! Sign-in against the dev Forge (`hero_devforge`, the workspace's Forgejo stand-in): its login form with the Forge
//! username and password, its consent page, PKCE, numeric `sub`, `groups` claim, issuer with a trailing slash like
//! Forgejo ≤ v11, and its refresh-token rotation; both through HTTP (reqwest) and in headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hero_proxy::{Config, ManualClock};
use hero_secrets::{MemorySecretStore, SecretStore};
use serde_json::Value;

const PASSWORD: &str = "alice-forge-password-1";

struct DevForge {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for DevForge {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts the dev forge with user alice (password known, member of org1:owners) and a confidential OAuth app whose
/// redirect URI is the proxy's callback. Returns the forge and the app's (client_id, client_secret).
async fn dev_forge(redirect_uri: &str) -> (DevForge, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("forge");
    std::fs::create_dir_all(&data).unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    hero_devforge::cli::seed_admin(&data, "alice", &dir.path().join("tok"), Some(&pw)).unwrap();
    hero_devforge::cli::add_member(&data, "alice", "org1:owners").unwrap();
    let creds = dir.path().join("app.json");
    hero_devforge::cli::add_oauth_app(
        &data,
        "hero_proxy",
        &[redirect_uri.to_owned()],
        true,
        &creds,
    )
    .unwrap();
    let app: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = hero_devforge::AppState::open(&data, hero_devforge::Config::new(&base)).unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(hero_devforge::run::serve(listener, state, async move {
        let _ = rx.await;
    }));
    (
        DevForge {
            base,
            stop: Some(stop),
            _dir: dir,
        },
        app["client_id"].as_str().unwrap().to_owned(),
        app["client_secret"].as_str().unwrap().to_owned(),
    )
}

async fn proxy_for(
    forge: &DevForge,
    port: u16,
    client_id: &str,
    secret: &str,
    echo: &Echo,
    dir: &std::path::Path,
) -> (hero_proxy::Running, Arc<ManualClock>) {
    let secrets = Arc::new(MemorySecretStore::new());
    secrets
        .set("cockpit/FORGE_OAUTH_CLIENT_ID", client_id)
        .await
        .unwrap();
    secrets
        .set("cockpit/FORGE_OAUTH_CLIENT_SECRET", secret)
        .await
        .unwrap();
    secrets
        .set("cockpit/FORGE_OAUTH_ISSUER", &forge.base)
        .await
        .unwrap();
    let toml = format!(
        "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{d}\"\nsocket_dir = \"{d}/s\"\npublic_scheme = \"http\"\nredirect_uri_from_host = true\n\
         [[routes]]\npath = \"/\"\nupstream = \"http://{up}\"\npass_token = true\n\
         [group_map]\n\"org1:owners\" = [\"owners\"]\n",
        d = dir.display(),
        up = echo.addr
    );
    let clock = Arc::new(ManualClock::new(unix_now()));
    let p = hero_proxy::start(
        Config::from_toml_with_env(&toml, Vec::new()).unwrap(),
        secrets,
        clock.clone(),
    )
    .await
    .unwrap();
    (p, clock)
}

/// authorize → login form (username + password) → consent → callback URL.
async fn walk_forge(forge: &DevForge, authorize: &str) -> String {
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = b.get(authorize).send().await.unwrap();
    for _ in 0..6 {
        if r.status().is_redirection() {
            let loc = r.headers()["location"].to_str().unwrap().to_owned();
            if loc.contains("/oauth/callback") {
                return loc;
            }
            let next = if loc.starts_with('/') {
                format!("{}{loc}", forge.base)
            } else {
                loc
            };
            r = b.get(&next).send().await.unwrap();
            continue;
        }
        assert_eq!(r.status(), 200);
        let url = r.url().to_string();
        let html = r.text().await.unwrap();
        r = if html.contains("id=\"login\"") {
            let login = b
                .post(&url)
                .form(&[("user_name", "alice"), ("password", PASSWORD)])
                .send()
                .await
                .unwrap();
            assert!(login.status().is_redirection(), "login: {}", login.status());
            b.get(authorize).send().await.unwrap()
        } else {
            assert!(html.contains("id=\"consent\""), "{html}");
            let mut fields = hero_devforge::oauth::html::hidden_inputs(&html);
            fields.push(("granted".into(), "true".into()));
            b.post(format!("{}/login/oauth/authorize", forge.base))
                .form(&fields)
                .send()
                .await
                .unwrap()
        };
    }
    panic!("dev forge never redirected to the callback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_dev_forge_with_refresh_rotation() {
    // Held until the proxy has bound it too (see `reserve_port`).
    let (port, _reserved) = reserve_port();
    let base = format!("http://localhost:{port}");
    let (forge, client_id, secret) = dev_forge(&format!("{base}/oauth/callback")).await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, clock) = proxy_for(&forge, port, &client_id, &secret, &echo, dir.path()).await;

    let (auth, lc) = begin_login(&base, "/after", "alice").await;
    assert_eq!(query(&auth)["scope"], hero_proxy::oidc::FORGE_SCOPE);
    let cb = walk_forge(&forge, &auth).await;
    let r = Harness::client()
        .get(&cb)
        .header("cookie", &lc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/after");
    let cookie = session_pair(&r).unwrap();

    let get = |c: String| {
        let url = format!("{base}/x");
        async move {
            Harness::client()
                .get(url)
                .header("cookie", c)
                .send()
                .await
                .unwrap()
        }
    };
    let v: Value = get(cookie.clone()).await.json().await.unwrap();
    let seen = Seen(serde_json::from_value(v["headers"].clone()).unwrap());
    assert_eq!(seen.one("x-hero-user"), Some("alice"));
    let sub = seen.one("x-hero-external-id").unwrap();
    assert!(
        sub.parse::<u64>().is_ok(),
        "Forgejo-style numeric sub, got {sub}"
    );
    assert_eq!(seen.one("x-hero-claims"), Some("groups.owners,users.alice"));
    let token = seen.one("x-hero-forge-token").unwrap().to_owned();

    // The passed-through token works on the Forge API as the user.
    let me: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/user", forge.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["login"], "alice");

    // Refresh with rotation, single-flight under 20 concurrent requests, twice.
    for round in 1..=2u64 {
        clock.advance(3600);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            tasks.push(tokio::spawn(get(cookie.clone())));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().status(), 200);
        }
        assert_eq!(proxy.app.vault.refresh_count(), round);
    }
    // Round 2 succeeded only because round 1's rotated refresh token was kept (the dev forge rejects reuse).
    // (Its access tokens are JWTs that can be byte-identical within one second, so they are not compared.)
    let v: Value = get(cookie.clone()).await.json().await.unwrap();
    let seen = Seen(serde_json::from_value(v["headers"].clone()).unwrap());
    let me = reqwest::Client::new()
        .get(format!("{}/api/v1/user", forge.base))
        .bearer_auth(seen.one("x-hero-forge-token").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_forge_sign_in_in_headless_chromium() {
    // Held until the proxy has bound it too (see `reserve_port`).
    let (port, _reserved) = reserve_port();
    let base = format!("http://localhost:{port}");
    let (forge, client_id, secret) = dev_forge(&format!("{base}/oauth/callback")).await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_proxy, _clock) = proxy_for(&forge, port, &client_id, &secret, &echo, dir.path()).await;
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/browser-walk.mjs");
    let child = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("{base}/cockpit"))
        .env("HERO_PEERS_DIR", repo_root().join("tools/peers"))
        .env("FORGE_USER", "alice")
        .env("FORGE_PASSWORD_FILE", dir.path().join("pw"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "browser: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(v["url"], format!("{base}/cockpit"));
    let echo_body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    let seen = Seen(serde_json::from_value(echo_body["headers"].clone()).unwrap());
    assert_eq!(seen.one("x-hero-user"), Some("alice"));
}
