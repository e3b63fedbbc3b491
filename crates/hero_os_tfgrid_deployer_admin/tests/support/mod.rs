//! Test support: the real binaries (dev Forge, deployer server, this dashboard) in a temp dir,
//! each killed by PID when its guard drops. Same pattern as the server's tests, not shared code.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod oneshot;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hero_os_tfgrid_deployer_admin::auth::AuthMode;
use hero_os_tfgrid_deployer_admin::state::ALLOWLIST_SLOT;
use hero_os_tfgrid_deployer_admin::AppState;
use hero_os_tfgrid_deployer_sdk::{Client, Endpoint};
use hero_secrets::{FileSecretStore, SecretStore};

/// Builds the other workspace binaries in release, for the benchmark (`--release`). Debug test
/// runs use what `scripts/test.sh` built: rebuilding here would drop the `test-hooks` feature the
/// server's own tests need from the shared binary.
fn build_release_peers() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release"])
            .args([
                "-p",
                "hero_devforge",
                "-p",
                "hero_os_tfgrid_deployer_server",
                "--bins",
            ])
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: building the peer binaries failed; using what is in the target dir"
            );
        }
    });
}

/// A workspace binary, from the target dir of this test executable.
pub fn binary(name: &str) -> PathBuf {
    if name == "hero_os_tfgrid_deployer_admin" {
        return PathBuf::from(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer_admin"));
    }
    let exe = std::env::current_exe().expect("test exe");
    if exe.components().any(|c| c.as_os_str() == "release") {
        build_release_peers();
    }
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins --all-features` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL, by PID) when dropped.
pub struct ProcessGuard {
    pub child: Child,
    pub name: String,
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, at most `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_listen_line(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listen line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected {what} line {line:?}"))
        .to_owned()
}

/// Dev Forge + deployer server (+ optionally the dashboard binary) in one temp dir.
pub struct Stack {
    pub forge: ProcessGuard,
    pub server: ProcessGuard,
    pub forge_url: String,
    pub client: Client,
    pub secrets: FileSecretStore,
    pub root: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(&[]).await
    }

    /// `extra_env`: more `HERO_DEPLOYER_*` settings of the server.
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let forge_dir = root.join("forge");
        let token = root.join("forge-admin.token");
        let status = Command::new(binary("hero_devforge"))
            .args(["seed-admin", "--username", "forgeadmin", "--data-dir"])
            .arg(&forge_dir)
            .arg("--token-out")
            .arg(&token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("seed-admin");
        assert!(status.success(), "devforge seed-admin failed");
        let mut child = Command::new(binary("hero_devforge"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&forge_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("devforge");
        let forge_url = read_listen_line(&mut child, "devforge");
        let forge = ProcessGuard {
            child,
            name: "hero_devforge".into(),
        };

        let log = std::fs::File::create(root.join("server.log")).unwrap();
        let child = Command::new(binary("hero_os_tfgrid_deployer_server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &root)
            .env("HERO_LOG", "info")
            .env("HERO_SOCKET_DIR", root.join("sock"))
            .env("HERO_DEPLOYER_DATA_DIR", root.join("data"))
            .env("HERO_DEPLOYER_FORGE_URL", &forge_url)
            // The local backend's gateway on a port the OS picks (tests run in parallel).
            .env("HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN", "127.0.0.1:0")
            .envs(extra_env.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("server");
        let mut server = ProcessGuard {
            child,
            name: "server".into(),
        };
        let socket = root.join("sock/hero_os_tfgrid_deployer/rpc.sock");
        let client = Client::new(Endpoint::Unix(socket.clone()));
        let log_path = root.join("server.log");
        poll("the deployer server", Duration::from_secs(30), || {
            let exited = server.child.try_wait().unwrap();
            if let Some(status) = exited {
                panic!(
                    "server exited with {status}: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            let client = client.clone();
            async move { client.health().await.ok() }
        })
        .await;
        let admin_token = std::fs::read_to_string(&token).unwrap().trim().to_owned();
        {
            use hero_os_tfgrid_deployer_sdk::{methods::SecretSet, types::SecretSetParams};
            client
                .call::<SecretSet>(&SecretSetParams {
                    slot: "deployer/forge_admin_token".into(),
                    value: admin_token,
                })
                .await
                .unwrap();
        }
        let secrets = FileSecretStore::open(&root.join("data/secrets")).unwrap();
        Stack {
            forge,
            server,
            forge_url,
            client,
            secrets,
            root,
            _dir: dir,
        }
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    /// Writes the admin allowlist secret (as `hero_os_tfgrid_deployer secret set` would).
    pub async fn set_allowlist(&self, users: &str) {
        self.secrets.set(ALLOWLIST_SLOT, users).await.unwrap();
    }

    /// In-process dashboard state over this stack's server.
    pub fn state(&self, auth: AuthMode) -> AppState {
        AppState::new(
            Client::new(Endpoint::Unix(
                self.root.join("sock/hero_os_tfgrid_deployer/rpc.sock"),
            )),
            auth,
            Arc::new(self.secrets.clone()),
        )
    }

    /// Starts the dashboard binary on a free loopback port; returns its guard and base URL.
    pub fn start_admin(&self, args: &[&str]) -> (ProcessGuard, String) {
        let log = std::fs::File::create(self.root.join("admin.log")).unwrap();
        let mut child = Command::new(binary("hero_os_tfgrid_deployer_admin"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.root)
            .arg("--server")
            .arg(format!(
                "unix:{}",
                self.root
                    .join("sock/hero_os_tfgrid_deployer/rpc.sock")
                    .display()
            ))
            .arg("--socket-dir")
            .arg(self.socket_dir())
            .arg("--secrets-dir")
            .arg(self.root.join("data/secrets"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("admin");
        let url = read_listen_line(&mut child, "admin");
        (
            ProcessGuard {
                child,
                name: "admin".into(),
            },
            url,
        )
    }
}

/// One HTTP/1.1 request over TCP (`http://host:port`) or a unix socket path; returns status,
/// headers and body text.
pub async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let io: Box<dyn IoStream> = if let Some(p) = base.strip_prefix("unix:") {
        Box::new(tokio::net::UnixStream::connect(p).await.unwrap())
    } else {
        let addr = base.trim_start_matches("http://");
        Box::new(tokio::net::TcpStream::connect(addr).await.unwrap())
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).to_string();
    (status, headers, text)
}

pub trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> IoStream for T {}

pub mod edge;

/// chromedriver in its own process group, so dropping the guard kills chromedriver and the
/// Chromium it started (quit the WebDriver session first: [`Browser::quit`]).
pub struct Chromedriver {
    pub guard: ProcessGuard,
    pub url: String,
}

impl Chromedriver {
    pub async fn start() -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let guard = ProcessGuard {
            child,
            name: "chromedriver".into(),
        };
        let u = url.clone();
        poll("chromedriver", Duration::from_secs(20), || {
            let u = u.clone();
            async move {
                let addr = u.trim_start_matches("http://").to_owned();
                tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
            }
        })
        .await;
        Chromedriver { guard, url }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium left behind after a failed test.
        // `--` is essential: procps-ng `kill -KILL -12345` parses the negative id as options and
        // may end up calling kill(-1), i.e. every process of the user.
        let pgid = self.guard.child.id();
        if pgid > 1 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--"])
                .arg(format!("-{pgid}"))
                .status();
        }
    }
}

/// A headless Chromium session.
pub async fn browser(driver: &Chromedriver, profile: &Path) -> fantoccini::Client {
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
        .connect(&driver.url)
        .await
        .expect("WebDriver session")
}

/// Decommissions every user VM the test left behind and waits for the jobs, so the local
/// backend's sandboxes (sshd, health server) do not outlive the test.
pub async fn decommission_all(client: &Client) {
    use hero_os_tfgrid_deployer_sdk::jobs::{JobIdParams, ListJobsParams};
    use hero_os_tfgrid_deployer_sdk::methods;
    use hero_os_tfgrid_deployer_sdk::types::{ListUsersParams, UserIdParams, VmStatus};
    // Let active jobs end first (a decommission is refused while one runs).
    poll("active jobs to end", Duration::from_secs(120), || async {
        let p = client
            .call::<methods::ListJobs>(&ListJobsParams {
                active_only: Some(true),
                ..Default::default()
            })
            .await
            .ok()?;
        p.jobs.is_empty().then_some(())
    })
    .await;
    let Ok(users) = client
        .list_users(&ListUsersParams {
            limit: Some(500),
            ..Default::default()
        })
        .await
    else {
        return;
    };
    for u in users.users {
        if !matches!(
            u.vm_status,
            VmStatus::Ready | VmStatus::Failed | VmStatus::Provisioning
        ) {
            continue;
        }
        let Ok(job) = client
            .call::<methods::DecommissionVm>(&UserIdParams { user_id: u.user_id })
            .await
        else {
            continue;
        };
        poll(
            "the cleanup decommission",
            Duration::from_secs(120),
            || async {
                let j = client
                    .call::<methods::GetJob>(&JobIdParams { job_id: job.job_id })
                    .await
                    .ok()?;
                (!j.state.is_active()).then_some(())
            },
        )
        .await;
    }
}
