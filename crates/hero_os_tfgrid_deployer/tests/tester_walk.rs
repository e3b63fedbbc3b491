//! The v1 tester walk, end to end in headless Chromium (Debian `chromium` + `chromium-driver`)
//! against `demo` as a newcomer runs it: the dev Forge (`hero_devforge`, the stand-in for Forgejo),
//! the deployer server on the local backend (real sshd, real gateway), every machine behind this
//! workspace's `hero_proxy` in front of the cockpit stand-in, and the dashboard behind its own
//! `hero_proxy`.
//!
//! The operator signs in to the dashboard with Forge, creates `carol`, sees her password once and
//! deploys with live progress; in a fresh browser carol opens her URL, signs in with Forge,
//! approves the app and lands on her cockpit showing her and the repositories made for her on
//! Forge; `bob` signing in at carol's URL is refused by name; a request without a session never
//! reaches the cockpit (its own request log says so); after decommission the app is gone from Forge
//! and the URL answers the plain "no such machine" page. Screenshots go to `docs/screenshots/walk-*`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, DirReaper, RunningDemo};
use fantoccini::{Client, Locator};

fn shots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("walk-{name}.png")), png).unwrap();
}

/// Polls `f` every 50 ms until it yields, for at most `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn exists(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

/// Clicks `css` and waits until the next document has loaded.
async fn click_and_load(c: &Client, css: &str) {
    c.execute("window.__old_page = true;", vec![])
        .await
        .unwrap();
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
    poll("the next page", Duration::from_secs(30), || async {
        let v = c
            .execute(
                "return window.__old_page === true && document.readyState;",
                vec![],
            )
            .await
            .ok()?;
        (v == serde_json::Value::Bool(false)).then_some(())
    })
    .await;
}

/// chromedriver in its own process group; dropping it kills the group (and any Chromium).
struct Chromedriver {
    child: std::process::Child,
    url: String,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        poll("chromedriver", Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Chromedriver { child, url }
    }

    /// A headless Chromium with a profile of its own: a fresh browser, no cookies shared.
    async fn browser(&self, profile: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("WebDriver session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let pgid = self.child.id();
        if pgid > 1 {
            // `--`: procps `kill -KILL -N` would parse the negative id as options.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--"])
                .arg(format!("-{pgid}"))
                .status();
        }
        let _ = self.child.wait();
    }
}

/// Signs in on the dev Forge's page the browser was sent to, and approves the app if asked.
async fn forge_sign_in(c: &Client, user: &str, password: &str, shot_name: Option<&str>) {
    poll(
        "the Forge sign-in page",
        Duration::from_secs(20),
        || async { exists(c, "#sign_in").await.then_some(()) },
    )
    .await;
    let here = c.current_url().await.unwrap();
    assert!(
        here.path().starts_with("/login/oauth/authorize") || here.path().starts_with("/login"),
        "not Forge's sign-in: {here}"
    );
    c.find(Locator::Id("user_name"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    if let Some(name) = shot_name {
        shot(c, &format!("{name}-forge-sign-in")).await;
    }
    click_and_load(c, "#sign_in").await;
    if exists(c, "#authorize").await {
        if let Some(name) = shot_name {
            shot(c, &format!("{name}-forge-authorize")).await;
        }
        click_and_load(c, "#authorize").await;
    }
}

/// The dev Forge's API as its admin (the token `demo` seeded, 0600 in the demo directory).
struct ForgeAdmin {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl ForgeAdmin {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let resp = req
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or_default())
    }

    async fn create_user(&self, username: &str, password: &str) {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/api/v1/admin/users", self.url))
                    .json(&serde_json::json!({
                        "username": username, "email": format!("{username}@example.org"),
                        "password": password, "must_change_password": false,
                    })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// A repository owned by `owner`, made as them (`Sudo`), as Forgejo's admins can.
    async fn create_repo_for(&self, owner: &str, name: &str) {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/api/v1/user/repos", self.url))
                    .header("Sudo", owner)
                    .json(&serde_json::json!({"name": name, "description": "made by the tester walk"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    async fn app_names(&self) -> Vec<String> {
        let (status, body) = self
            .send(
                self.http
                    .get(format!("{}/api/v1/user/applications/oauth2", self.url)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// The cockpit's own request log in carol's sandbox.
fn request_log(root: &Path) -> PathBuf {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "cockpit_requests.jsonl") {
                out.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root.join("data/local/sandboxes"), &mut found);
    found
        .into_iter()
        .find(|p| p.display().to_string().contains("_carol/"))
        .expect("carol's cockpit request log")
}

fn logged_requests(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tester_walk_in_headless_chromium() {
    std::fs::create_dir_all(shots_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _reaper = DirReaper(dir.path().to_path_buf());
    let gateway_port = free_port();
    let admin_port = free_port();
    let demo = RunningDemo::start(
        dir.path(),
        &[
            "dora",
            "--gateway-port",
            &gateway_port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
        ],
    );
    let dashboard = demo.field("Dashboard");
    let sign_in = demo.field("Sign in");
    let operator_password = sign_in
        .strip_prefix("with Forge as hero-operator / ")
        .unwrap_or_else(|| panic!("{sign_in}"))
        .to_owned();
    let forge = ForgeAdmin {
        url: demo.field("Forge").trim_end_matches('/').to_owned(),
        token: std::fs::read_to_string(dir.path().join("forge-admin.token"))
            .unwrap()
            .trim()
            .to_owned(),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    };
    forge.create_user("bob", "bob-walks-in-2026").await;

    let driver = Chromedriver::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let result = walk(
        &driver,
        profiles.path(),
        &dashboard,
        &operator_password,
        &forge,
        dir.path(),
    )
    .await;
    drop(driver);
    let stderr = demo.ctrl_c();
    if let Err(e) = result {
        panic!("{e}\ndemo stderr:\n{stderr}");
    }
}

async fn walk(
    driver: &Chromedriver,
    profiles: &Path,
    dashboard: &str,
    operator_password: &str,
    forge: &ForgeAdmin,
    root: &Path,
) -> Result<(), String> {
    // The operator: the dashboard sends them to Forge, they sign in, and land on the dashboard.
    let op = driver.browser(&profiles.join("operator")).await;
    op.goto(dashboard).await.unwrap();
    forge_sign_in(&op, "hero-operator", operator_password, Some("01-operator")).await;
    let base = dashboard.trim_end_matches('/');
    op.goto(&format!("{base}/users")).await.unwrap();
    let h1 = text(&op, "h1").await;
    if !h1.contains("Users") {
        return Err(format!(
            "the operator did not reach the dashboard: {}",
            op.source().await.unwrap_or_default()
        ));
    }
    shot(&op, "02-dashboard").await;

    // Create carol: the password is shown once.
    op.goto(&format!("{base}/users/new")).await.unwrap();
    op.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("carol")
        .await
        .unwrap();
    click_and_load(&op, "form.stack button[type=submit]").await;
    let carol_password = text(&op, "[data-testid=initial-password]").await;
    assert_eq!(carol_password.len(), 32, "{carol_password:?}");
    shot(&op, "03-carol-created").await;
    forge.create_repo_for("carol", "carol-notes").await;

    // Deploy with live progress.
    op.find(Locator::Css("form[action$='/deploy'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    poll("the live timeline", Duration::from_secs(30), || async {
        (exists(&op, "[data-live-job]").await || exists(&op, "[data-final-state]").await)
            .then_some(())
    })
    .await;
    if exists(&op, ".steps li[data-state=running]").await {
        shot(&op, "04-deploying").await;
    }
    let state = poll("the deploy to finish", Duration::from_secs(240), || async {
        let els = op.find_all(Locator::Css("[data-final-state]")).await.ok()?;
        let s = els.first()?.attr("data-final-state").await.ok()??;
        matches!(s.as_str(), "succeeded" | "failed" | "cancelled").then_some(s)
    })
    .await;
    if state != "succeeded" {
        return Err(format!(
            "deploy ended {state}: {}",
            op.source().await.unwrap_or_default()
        ));
    }
    let url = op
        .find(Locator::Css("[data-testid=gateway-url]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let user_page = op.current_url().await.unwrap().to_string();
    shot(&op, "05-carol-ready").await;
    assert!(
        forge.app_names().await.iter().any(|n| n.contains("_carol")),
        "carol's OAuth app on Forge: {:?}",
        forge.app_names().await
    );

    // Without a session nothing reaches the cockpit: the edge answers with a redirect.
    let log = request_log(root);
    let before = logged_requests(&log).len();
    let gateway: std::net::SocketAddr = format!(
        "127.0.0.1:{}",
        url.rsplit(':').next().unwrap().trim_end_matches('/')
    )
    .parse()
    .unwrap();
    let host = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let anon = reqwest::Client::builder()
        .resolve(&host, gateway)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "",
        "api/me",
        "repos",
        "%2e%2e/",
        "oauth/../",
        "health/..%2f",
    ] {
        let r = anon.get(format!("{url}{path}")).send().await.unwrap();
        assert!(
            matches!(r.status().as_u16(), 302 | 303 | 400 | 401 | 404),
            "{path}: {}",
            r.status()
        );
    }
    let after = logged_requests(&log);
    assert_eq!(after.len(), before, "reached the cockpit: {after:?}");

    // Carol, in a fresh browser: her URL sends her to Forge, and she lands on her cockpit.
    let carol = driver.browser(&profiles.join("carol")).await;
    carol.goto(&url).await.unwrap();
    forge_sign_in(&carol, "carol", &carol_password, Some("06-carol")).await;
    poll("carol's cockpit", Duration::from_secs(20), || async {
        exists(&carol, "#user").await.then_some(())
    })
    .await;
    assert_eq!(text(&carol, "#user").await, "carol");
    let source = carol
        .find(Locator::Id("token-source"))
        .await
        .unwrap()
        .attr("data-source")
        .await
        .unwrap();
    assert_eq!(source.as_deref(), Some("passed_through"));
    let repos = text(&carol, "#repos").await;
    assert!(repos.contains("carol/carol-notes"), "{repos}");
    shot(&carol, "07-carol-cockpit").await;
    // Every request that reached the cockpit carried carol's verified identity, but the public probe.
    let owners_only = |r: &serde_json::Value| r["user"] == "carol" || r["path"] == "/health";
    let seen = logged_requests(&log);
    assert!(seen
        .iter()
        .any(|r| r["user"] == "carol" && r["path"] == "/"));
    assert!(
        seen.iter().all(owners_only),
        "requests without carol's identity reached the cockpit: {seen:?}"
    );

    // Bob signs in at carol's URL and is refused, by name.
    let bob = driver.browser(&profiles.join("bob")).await;
    bob.goto(&url).await.unwrap();
    forge_sign_in(&bob, "bob", "bob-walks-in-2026", Some("08-bob")).await;
    let page = text(&bob, "body").await;
    assert!(
        page.contains("Access denied") && page.contains("signed in as bob"),
        "{page}"
    );
    assert!(!exists(&bob, "#user").await, "bob reached the cockpit");
    shot(&bob, "09-bob-refused").await;
    assert!(
        logged_requests(&log).iter().all(owners_only),
        "bob reached the cockpit"
    );

    // An admin may open it too: the operator, already signed in to Forge, approves and lands.
    op.goto(&url).await.unwrap();
    poll(
        "the operator at carol's URL",
        Duration::from_secs(20),
        || async {
            if exists(&op, "#authorize").await {
                click_and_load(&op, "#authorize").await;
            }
            exists(&op, "#user").await.then_some(())
        },
    )
    .await;
    assert_eq!(text(&op, "#user").await, "hero-operator");
    // ... and leaves no Forge token on carol's machine (`keep_tokens = "owner"`): its vault holds one identity's
    // tokens, carol's, though the operator, an admin, signed in there too.
    let sandbox = log
        .ancestors()
        .find(|p| p.parent().is_some_and(|d| d.ends_with("sandboxes")))
        .expect("carol's sandbox");
    let vault = hero_secrets::FileSecretStore::open(&sandbox.join("secrets")).unwrap();
    let identities: std::collections::BTreeSet<String> =
        hero_secrets::SecretStore::list(&vault, "hero_proxy/tokens/")
            .await
            .unwrap()
            .iter()
            .filter_map(|slot| {
                slot.rsplit_once('/')
                    .map(|(identity, _)| identity.to_owned())
            })
            .collect();
    assert_eq!(
        identities.len(),
        1,
        "tokens of more than the owner on the VM: {identities:?}"
    );

    // Decommission from the dashboard; the app leaves Forge and the URL says "no such machine".
    op.goto(&user_page).await.unwrap();
    op.find(Locator::Css("form[action$='/decommission'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    poll("the confirm dialog", Duration::from_secs(5), || async {
        op.accept_alert().await.ok()
    })
    .await;
    poll(
        "carol's app to leave Forge",
        Duration::from_secs(120),
        || async { (!forge.app_names().await.iter().any(|n| n.contains("_carol"))).then_some(()) },
    )
    .await;
    let gone = poll(
        "the URL to answer 'no such machine'",
        Duration::from_secs(120),
        || async {
            carol.goto(&url).await.ok()?;
            let body = text(&carol, "body").await;
            body.contains("No such machine").then_some(body)
        },
    )
    .await;
    assert!(
        !gone.contains("127.0.0.1"),
        "internal address shown: {gone}"
    );
    shot(&carol, "10-after-decommission").await;
    for c in [op, carol, bob] {
        let _ = c.close().await;
    }
    Ok(())
}
