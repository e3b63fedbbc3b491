//! The deployer's own Forge client, through a real `prism proxy --errors` (npm
//! `@stoplight/prism-cli`) loaded with the Forgejo swagger, in front of the dev Forge: the whole
//! user lifecycle must produce zero request or response violations. A negative control proves the
//! proxy does flag a bad request in this setup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed Forgejo swagger (Swagger 2.0) with `/api/v1` baked into the paths: Prism ignores
/// `basePath` (test-peers.md §2).
fn prism_spec(dir: &Path) -> PathBuf {
    let fixture = repo().join("crates/hero_devforge/tests/fixtures/forgejo.swagger.v1.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let paths: serde_json::Map<String, Value> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (format!("/api/v1{k}"), v.clone()))
        .collect();
    spec["paths"] = Value::Object(paths);
    spec["basePath"] = json!("/");
    let out = dir.join("swagger.prism.json");
    std::fs::write(&out, serde_json::to_vec(&spec).unwrap()).unwrap();
    out
}

fn start_prism(dir: &Path, upstream: &str) -> (ProcessGuard, String, PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("prism.log");
    let file = std::fs::File::create(&log).unwrap();
    let script = std::fs::canonicalize(repo().join("tools/peers/node_modules/.bin/prism"))
        .expect("prism missing: run scripts/install-test-deps.sh");
    let child = Command::new("node")
        .arg(script)
        .args([
            "proxy",
            "--errors",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .arg(prism_spec(dir))
        .arg(upstream)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "prism did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        poll_pause();
    }
    (
        ProcessGuard {
            child,
            name: "prism".into(),
        },
        url,
        log,
    )
}

/// Prism's error lines (`✖`) and any `violation` it logs.
fn prism_errors(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains('✖') || l.to_ascii_lowercase().contains("violation"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn user_lifecycle_through_prism_has_zero_violations() {
    let dir = tempfile::tempdir().unwrap();
    let forge = DevForge::start(dir.path());
    let (_prism, prism_url, prism_log) = start_prism(dir.path(), &forge.url);
    // The admin token comes from a file here, so even the start-up `/version` call is
    // authenticated: the spec declares auth on every operation (Forgejo itself serves it openly).
    let server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: prism_url.clone(),
            extra_env: vec![(
                "HERO_DEPLOYER_FORGE_ADMIN_TOKEN_FILE".into(),
                forge.admin_token_file.display().to_string(),
            )],
        },
    );
    let c = &server.client;

    // Created, then adopted (made on Forge behind our back), then refused as a duplicate.
    let alice = c.create_user("alice", Some("Alice"), None).await.unwrap();
    assert!(alice.forge_token_set);
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{}/api/v1/admin/users", forge.url))
        .header("Authorization", format!("token {}", forge.admin_token()))
        .json(&json!({"username":"bob","email":"bob@example.org","password":"Bob-password-1234","must_change_password":false}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let bob = c
        .create_user("bob", None, Some("bob2@example.org"))
        .await
        .unwrap();
    assert!(bob.adopted);
    assert!(c.create_user("alice", None, None).await.is_err());
    // The password reset (PATCH /admin/users/{username}) through the same Prism, on the adopted
    // account: afterwards the new password opens it.
    let reset = c.reset_forge_password(bob.user_id).await.unwrap();
    let me = http
        .get(format!("{}/api/v1/user", forge.url))
        .basic_auth("bob", Some(&reset.new_password))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // The check that settles a reset whose answer was lost (`GET /user` with the user's Basic
    // credentials), through the same Prism: the new password signs in as bob, a wrong one does not.
    {
        use hero_os_tfgrid_deployer_server::forge::ForgeApi;
        use hero_secrets::SecretValue;
        let f = http_forge(&prism_url, &forge.admin_token_file);
        let new = SecretValue::new(reset.new_password.as_str());
        assert!(f.password_works("bob", &new).await.unwrap());
        let wrong = SecretValue::new("Not-bobs-password-123");
        assert!(!f.password_works("bob", &wrong).await.unwrap());
        assert!(!f.password_works("alice", &new).await.unwrap());
    }
    // Forge's own refusal (email taken) comes back as a conflict, through Prism.
    let err = c
        .create_user("carol", None, Some("bob@example.org"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        Some(hero_os_tfgrid_deployer_sdk::ErrorKind::ForgeConflict),
        "{err}"
    );

    // The Forge client logs every exchange Prism flags (sl-violations or problem+json).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log_text().contains("Forge answered") {
        assert!(
            Instant::now() < deadline,
            "the start-up /version call never succeeded: {}",
            server.log_text()
        );
        poll_pause();
    }
    let server_log = server.log_text();
    assert!(server_log.contains("user ready"));
    assert!(
        !server_log.contains("violates the Forgejo API spec"),
        "the deployer's Forge traffic violates the spec:\n{server_log}"
    );
    let found = prism_errors(&prism_log);
    assert!(
        found.is_empty(),
        "Prism reported errors:\n{}",
        found.join("\n")
    );

    // Negative control: an invalid request through the same Prism is rejected with Prism's own
    // problem+json and its validation list, so the checks above can fail.
    let bad = http
        .post(format!("{prism_url}/api/v1/admin/users"))
        .header("Authorization", format!("token {}", forge.admin_token()))
        .json(&json!({"username": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/problem+json"));
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["validation"].as_array().is_some_and(|v| !v.is_empty()),
        "{body}"
    );
}

/// A Forge client for the OAuth-app port, with the admin token read from `token_file`.
fn http_forge(
    url: &str,
    token_file: &Path,
) -> hero_os_tfgrid_deployer_server::forge::http::HttpForge {
    use hero_os_tfgrid_deployer_server::forge::http::{AdminTokenSource, HttpForge, RetryPolicy};
    HttpForge::new(
        url,
        Duration::from_secs(20),
        AdminTokenSource::File(token_file.to_owned()),
        RetryPolicy::default(),
        std::sync::Arc::new(hero_os_tfgrid_deployer_server::clock::OsRandom),
    )
    .unwrap()
}

/// The OAuth-app port (`forge::apps`) through Prism: create, list (paged), get, rotate, delete,
/// the "already gone" answers, and a token without `write:user` failing with an error that names
/// the scope. Zero violations in either direction.
#[tokio::test]
async fn oauth_app_port_through_prism_has_zero_violations() {
    use hero_os_tfgrid_deployer_server::forge::apps::{ForgeApps, OAuthAppSpec};
    use hero_os_tfgrid_deployer_server::forge::ForgeError;

    let dir = tempfile::tempdir().unwrap();
    let forge = DevForge::start(dir.path());
    let (_prism, prism_url, prism_log) = start_prism(dir.path(), &forge.url);
    // Prism answers once its port is open, but may still be loading the spec: wait for a 200.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(format!("{prism_url}/api/v1/version"))
            .header("Authorization", format!("token {}", forge.admin_token()))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "Prism not ready");
        poll_pause();
    }
    let apps = http_forge(&prism_url, &forge.admin_token_file);
    let spec = |n: u32| OAuthAppSpec {
        name: format!("hero_os_tfgrid_deployer vm {n} (carol)"),
        redirect_uris: vec![format!("https://carol{n}.example.org/oauth/callback")],
        confidential: true,
    };
    // More than one page (the port walks pages of 50).
    let mut made = Vec::new();
    for n in 0..53 {
        made.push(apps.create_oauth_app(&spec(n)).await.unwrap());
    }
    let listed = apps.list_oauth_apps().await.unwrap();
    assert_eq!(listed.len(), 53);
    assert_eq!(listed[52], made[52].app);
    let first = &made[0];
    assert!(!first.secret.expose().is_empty());
    assert_eq!(
        apps.get_oauth_app(first.app.id).await.unwrap().as_ref(),
        Some(&first.app)
    );
    let rotated = apps
        .rotate_oauth_app(first.app.id, &spec(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.app.client_id, first.app.client_id);
    assert_ne!(rotated.secret.expose(), first.secret.expose());
    assert!(apps.delete_oauth_app(first.app.id).await.unwrap());
    assert!(
        !apps.delete_oauth_app(first.app.id).await.unwrap(),
        "already gone is fine"
    );
    assert_eq!(apps.get_oauth_app(first.app.id).await.unwrap(), None);
    assert!(apps
        .rotate_oauth_app(first.app.id, &spec(0))
        .await
        .unwrap()
        .is_none());

    // A site-admin token without `write:user`: every app call names the missing scope.
    let admin = format!("token {}", forge.admin_token());
    let r = http
        .post(format!("{}/api/v1/admin/users", forge.url))
        .header("Authorization", &admin)
        .json(&json!({"username":"ops","email":"ops@example.org","password":"Ops-password-12345","must_change_password":false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .patch(format!("{}/api/v1/admin/users/ops", forge.url))
        .header("Authorization", &admin)
        .json(&json!({"admin": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r: Value = http
        .post(format!("{}/api/v1/users/ops/tokens", forge.url))
        .basic_auth("ops", Some("Ops-password-12345"))
        .json(&json!({"name":"old","scopes":["write:admin","read:user"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let narrow_file = dir.path().join("narrow.token");
    std::fs::write(&narrow_file, r["sha1"].as_str().unwrap()).unwrap();
    let narrow = http_forge(&prism_url, &narrow_file);
    let err = narrow.create_oauth_app(&spec(99)).await.err().unwrap();
    assert!(
        matches!(&err, ForgeError::AdminTokenScopeMissing { scope, .. } if scope == "write:user"),
        "{err:?}"
    );
    assert_eq!(err.code(), "FRG009_admin_token_scope_missing");
    assert!(
        err.to_string().contains("lacks the scope write:user"),
        "{err}"
    );
    let err = narrow.delete_oauth_app(made[1].app.id).await.err().unwrap();
    assert!(
        matches!(err, ForgeError::AdminTokenScopeMissing { .. }),
        "{err:?}"
    );
    // Reading needs only read:user, which this token has.
    assert!(
        narrow.list_oauth_apps().await.unwrap().is_empty(),
        "ops has no apps of its own"
    );

    let found = prism_errors(&prism_log);
    assert!(
        found.is_empty(),
        "Prism reported errors:\n{}",
        found.join("\n")
    );
}
