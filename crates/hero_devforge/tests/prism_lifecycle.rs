//! The real `hero_devforge` binary behind a real `prism proxy --errors` (npm `@stoplight/prism-cli`)
//! loaded with Forgejo's swagger (committed fixture, `/api/v1` baked into the paths because Prism
//! ignores `basePath`). Prism validates requests and responses in both directions: any violation
//! shows up as an `sl-violations` header or a 422/500 `application/problem+json` from Prism itself.
//!
//! Needs `scripts/install-test-deps.sh` (installs Prism into tools/peers).

// Test support helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Kills the child by its PID when dropped, so no test run leaves a server behind.
struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!(
                "---- {} log ({}) ----\n{log}",
                self.name,
                self.log.display()
            );
        }
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn find_in_path(bin: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{bin} not found in PATH"))
}

fn prism_script() -> PathBuf {
    let bin =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/peers/node_modules/.bin/prism");
    std::fs::canonicalize(&bin).unwrap_or_else(|_| {
        panic!(
            "Prism is not installed at {}: run scripts/install-test-deps.sh",
            bin.display()
        )
    })
}

/// The committed Forgejo swagger with `/api/v1` prefixed to every path and `basePath` `/`.
fn write_prism_spec(dir: &Path) -> PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forgejo.swagger.v1.json");
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let paths = spec["paths"].as_object().unwrap().clone();
    let prefixed: serde_json::Map<String, Value> = paths
        .into_iter()
        .map(|(k, v)| (format!("/api/v1{k}"), v))
        .collect();
    spec["paths"] = Value::Object(prefixed);
    spec["basePath"] = json!("/");
    let out = dir.join("swagger.prism.json");
    std::fs::write(&out, serde_json::to_vec(&spec).unwrap()).unwrap();
    out
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// Starts `hero_devforge serve` on port 0 and returns its guard and base URL (read from stdout).
fn start_devforge(dir: &Path) -> (ChildGuard, String) {
    let log = dir.join("devforge.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hero_devforge"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("forge"))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard {
        name: "hero_devforge",
        child,
        log,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("hero_devforge did not print its listen line in time");
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (guard, url)
}

fn start_prism(dir: &Path, upstream: &str) -> (ChildGuard, String) {
    let spec = write_prism_spec(dir);
    let port = free_port();
    let log = dir.join("prism.log");
    let logf = std::fs::File::create(&log).unwrap();
    let child = Command::new(find_in_path("node"))
        .arg(prism_script())
        .args([
            "proxy",
            "--errors",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .arg(&spec)
        .arg(upstream)
        .stdout(Stdio::from(logf.try_clone().unwrap()))
        .stderr(Stdio::from(logf))
        .spawn()
        .unwrap();
    (
        ChildGuard {
            name: "prism",
            child,
            log,
        },
        format!("http://127.0.0.1:{port}"),
    )
}

/// Asserts a response passed Prism's validation untouched.
fn assert_clean(what: &str, resp: &reqwest::Response) {
    assert!(
        resp.headers().get("sl-violations").is_none(),
        "{what}: sl-violations {:?}",
        resp.headers().get("sl-violations")
    );
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        !ct.contains("problem+json"),
        "{what}: Prism problem response ({ct})"
    );
}

async fn send(what: &str, req: reqwest::RequestBuilder, expect: StatusCode) -> Value {
    let resp = req.send().await.unwrap();
    assert_clean(what, &resp);
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, expect, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A seeded dev forge behind Prism: (guards, Prism base URL, admin token, admin password).
struct PrismForge {
    _forge: ChildGuard,
    _prism: ChildGuard,
    url: String,
    admin_token: String,
    admin_pw: &'static str,
    http: reqwest::Client,
    _tmp: tempfile::TempDir,
}

async fn prism_forge() -> PrismForge {
    let tmp = tempfile::tempdir().unwrap();
    let admin_pw = "Admin-Passw0rd-For-Prism-Tests!!";
    let pw_file = tmp.path().join("admin.pw");
    std::fs::write(&pw_file, admin_pw).unwrap();
    let tok_file = tmp.path().join("admin.token");
    let status = Command::new(env!("CARGO_BIN_EXE_hero_devforge"))
        .args(["seed-admin", "--username", "root", "--data-dir"])
        .arg(tmp.path().join("forge"))
        .arg("--token-out")
        .arg(&tok_file)
        .arg("--password-file")
        .arg(&pw_file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let admin_token = std::fs::read_to_string(&tok_file).unwrap();

    let (_forge, forge_url) = start_devforge(tmp.path());
    let (_prism, prism_url) = start_prism(tmp.path(), &forge_url);

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let admin = format!("token {admin_token}");

    // Readiness: poll through Prism until it answers, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = http
            .get(format!("{prism_url}/api/v1/version"))
            .header("authorization", &admin)
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == StatusCode::OK {
                assert_clean("version", &r);
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["version"], "11.0.1+devforge");
                break;
            }
        }
        assert!(Instant::now() < deadline, "Prism not ready in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    PrismForge {
        _forge,
        _prism,
        url: prism_url,
        admin_token,
        admin_pw,
        http,
        _tmp: tmp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_lifecycle_through_prism_has_no_violations() {
    let pf = prism_forge().await;
    let (http, prism_url, admin_pw) = (&pf.http, &pf.url, pf.admin_pw);
    let admin = format!("token {}", pf.admin_token);

    let api = format!("{prism_url}/api/v1");
    let user_pw = "Us3r-Password-0123456789-abcdefg!";
    let created = send(
        "create user",
        http.post(format!("{api}/admin/users"))
            .header("authorization", &admin)
            .json(&json!({
                "username": "prism_alice",
                "email": "prism_alice@nomail.example.org",
                "password": user_pw,
                "full_name": "Prism Alice",
                "must_change_password": false,
                "send_notify": false,
                "visibility": "private"
            })),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["login"], "prism_alice");

    let minted = send(
        "mint token",
        http.post(format!("{api}/users/prism_alice/tokens"))
            .header("authorization", basic("root", admin_pw))
            .json(&json!({"name": "deployer", "scopes": ["write:repository", "read:user"]})),
        StatusCode::CREATED,
    )
    .await;
    let user_token = minted["sha1"].as_str().unwrap().to_string();
    assert_eq!(user_token.len(), 40);

    let got = send(
        "get user",
        http.get(format!("{api}/users/prism_alice"))
            .header("authorization", &admin),
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["id"], created["id"]);

    let me = send(
        "current user",
        http.get(format!("{api}/user"))
            .header("authorization", format!("token {user_token}")),
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["login"], "prism_alice");

    let list = send(
        "list tokens",
        http.get(format!("{api}/users/prism_alice/tokens"))
            .header("authorization", basic("root", admin_pw)),
        StatusCode::OK,
    )
    .await;
    assert_eq!(list[0]["sha1"], "");

    // Errors, still spec-conformant.
    send(
        "unknown user",
        http.get(format!("{api}/users/prism_nobody"))
            .header("authorization", &admin),
        StatusCode::NOT_FOUND,
    )
    .await;
    let taken = send(
        "taken name",
        http.post(format!("{api}/admin/users"))
            .header("authorization", &admin)
            .json(&json!({
                "username": "prism_alice",
                "email": "other@nomail.example.org",
                "password": user_pw,
                "must_change_password": false
            })),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(taken["message"], "user already exists [name: prism_alice]");
    send(
        "reserved name",
        http.post(format!("{api}/admin/users"))
            .header("authorization", &admin)
            .json(&json!({
                "username": "ghost",
                "email": "ghost@nomail.example.org",
                "password": user_pw,
                "must_change_password": false
            })),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    send(
        "delete token",
        http.delete(format!("{api}/users/prism_alice/tokens/deployer"))
            .header("authorization", basic("root", admin_pw)),
        StatusCode::NO_CONTENT,
    )
    .await;
    send(
        "delete user",
        http.delete(format!("{api}/admin/users/prism_alice"))
            .header("authorization", &admin),
        StatusCode::NO_CONTENT,
    )
    .await;

    // Negative control: Prism really validates. A request that breaks the spec (`format: email`)
    // must be flagged by Prism itself, proving the checks above were not vacuous.
    let resp = http
        .post(format!("{api}/admin/users"))
        .header("authorization", &admin)
        .json(&json!({"username": "prism_bad", "email": "not-an-email", "password": user_pw}))
        .send()
        .await
        .unwrap();
    let flagged = resp.headers().get("sl-violations").is_some()
        || resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("problem+json"));
    assert!(
        flagged,
        "Prism did not flag an invalid request: {:?}",
        resp.headers()
    );
}

/// The endpoints the SSO step and the cockpit use: an OAuth2 app made on a user's behalf with
/// `Sudo`, read, rotated (`PATCH`), deleted; the user's repositories created and listed. Every
/// request and response passes Prism's validation against Forgejo's swagger, errors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_apps_and_user_repos_through_prism_have_no_violations() {
    let pf = prism_forge().await;
    let http = &pf.http;
    let api = format!("{}/api/v1", pf.url);
    let admin_basic = basic("root", pf.admin_pw);
    let user_pw = "Us3r-Password-0123456789-abcdefg!";
    send(
        "create user",
        http.post(format!("{api}/admin/users"))
            .header("authorization", format!("token {}", pf.admin_token))
            .json(&json!({
                "username": "prism_carol",
                "email": "prism_carol@nomail.example.org",
                "password": user_pw,
                "must_change_password": false
            })),
        StatusCode::CREATED,
    )
    .await;
    // The deployer's admin token, with the `write:user` it needs for apps.
    let minted = send(
        "mint admin token",
        http.post(format!("{api}/users/root/tokens"))
            .header("authorization", &admin_basic)
            .json(&json!({"name": "sso", "scopes": ["write:admin", "write:user"]})),
        StatusCode::CREATED,
    )
    .await;
    let admin = format!("token {}", minted["sha1"].as_str().unwrap());

    let cb = "https://prism-carol.example.org/oauth/callback";
    let created = send(
        "create app as admin",
        http.post(format!("{api}/user/applications/oauth2"))
            .header("authorization", &admin)
            .json(&json!({"name": "hero_os_tfgrid_deployer vm 1", "redirect_uris": [cb], "confidential_client": true})),
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    let got = send(
        "get app",
        http.get(format!("{api}/user/applications/oauth2/{id}"))
            .header("authorization", &admin),
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["client_secret"], "");
    let patched = send(
        "patch app (rotate)",
        http.patch(format!("{api}/user/applications/oauth2/{id}"))
            .header("authorization", &admin)
            .json(&json!({"name": "hero_os_tfgrid_deployer vm 1", "redirect_uris": [cb], "confidential_client": true})),
        StatusCode::OK,
    )
    .await;
    assert_ne!(patched["client_secret"], created["client_secret"]);
    send(
        "list apps",
        http.get(format!("{api}/user/applications/oauth2"))
            .header("authorization", &admin),
        StatusCode::OK,
    )
    .await;
    send(
        "delete app",
        http.delete(format!("{api}/user/applications/oauth2/{id}"))
            .header("authorization", &admin),
        StatusCode::NO_CONTENT,
    )
    .await;
    send(
        "get deleted app",
        http.get(format!("{api}/user/applications/oauth2/{id}"))
            .header("authorization", &admin),
        StatusCode::NOT_FOUND,
    )
    .await;
    send(
        "delete deleted app",
        http.delete(format!("{api}/user/applications/oauth2/{id}"))
            .header("authorization", &admin),
        StatusCode::NOT_FOUND,
    )
    .await;
    // On the user's behalf: admin + `Sudo`.
    let sudo = send(
        "create app with Sudo",
        http.post(format!("{api}/user/applications/oauth2"))
            .header("authorization", &admin)
            .header("Sudo", "prism_carol")
            .json(&json!({"name": "cockpit", "redirect_uris": [cb], "confidential_client": true})),
        StatusCode::CREATED,
    )
    .await;
    send(
        "delete app with Sudo",
        http.delete(format!(
            "{}/api/v1/user/applications/oauth2/{}",
            pf.url, sudo["id"]
        ))
        .header("authorization", &admin)
        .header("Sudo", "prism_carol"),
        StatusCode::NO_CONTENT,
    )
    .await;
    let low = send(
        "mint read-only token",
        http.post(format!("{api}/users/root/tokens"))
            .header("authorization", &admin_basic)
            .json(&json!({"name": "ro", "scopes": ["read:user"]})),
        StatusCode::CREATED,
    )
    .await;
    send(
        "create app without write:user",
        http.post(format!("{api}/user/applications/oauth2"))
            .header(
                "authorization",
                format!("token {}", low["sha1"].as_str().unwrap()),
            )
            .json(&json!({"name": "x", "redirect_uris": [cb], "confidential_client": true})),
        StatusCode::FORBIDDEN,
    )
    .await;

    // Repositories: created as the user (Basic), listed with the user's own token.
    let carol_basic = basic("prism_carol", user_pw);
    let repo = send(
        "create repo",
        http.post(format!("{api}/user/repos"))
            .header("authorization", &carol_basic)
            .json(&json!({"name": "hello-hero", "description": "first", "private": true, "auto_init": true})),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(repo["full_name"], "prism_carol/hello-hero");
    send(
        "create repo again",
        http.post(format!("{api}/user/repos"))
            .header("authorization", &carol_basic)
            .json(&json!({"name": "Hello-Hero"})),
        StatusCode::CONFLICT,
    )
    .await;
    send(
        "create repo with a bad name",
        http.post(format!("{api}/user/repos"))
            .header("authorization", &carol_basic)
            .json(&json!({"name": "bad name"})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let tok = send(
        "mint carol's token",
        http.post(format!("{api}/users/prism_carol/tokens"))
            .header("authorization", &admin_basic)
            .json(&json!({"name": "deployer", "scopes": ["write:repository", "read:user"]})),
        StatusCode::CREATED,
    )
    .await;
    let list = send(
        "list my repos",
        http.get(format!("{api}/user/repos?page=1&limit=10&order_by=name"))
            .header(
                "authorization",
                format!("token {}", tok["sha1"].as_str().unwrap()),
            ),
        StatusCode::OK,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "hello-hero");
}
