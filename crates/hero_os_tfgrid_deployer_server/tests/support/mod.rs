//! Test support: start the real binaries (dev Forge, deployer server) in a temp dir, each killed
//! by PID when its guard drops, and talk to them through the SDK.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hero_os_tfgrid_deployer_sdk::{Client, Endpoint};

/// A workspace binary, from the target dir of this test executable.
pub fn binary(name: &str) -> PathBuf {
    // Shared with other crates' tests (via #[path]), where this variable is not set.
    if let Some(own) = option_env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer_server") {
        if name == "hero_os_tfgrid_deployer_server" {
            return PathBuf::from(own);
        }
    }
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL, by PID) when dropped.
pub struct ProcessGuard {
    pub child: Child,
    pub name: String,
}

impl ProcessGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        wait_exit(&mut self.child, Duration::from_secs(10))
    }

    /// SIGKILL, like a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        poll_pause();
    }
}

/// Polling interval for readiness checks (a deadline bounds every poll loop).
#[allow(clippy::disallowed_methods)]
pub fn poll_pause() {
    // Not synchronisation: every caller re-checks its condition against a deadline.
    std::thread::sleep(Duration::from_millis(10));
}

/// The dev Forge, with a seeded admin token.
pub struct DevForge {
    pub guard: ProcessGuard,
    pub url: String,
    pub admin_token_file: PathBuf,
    pub data_dir: PathBuf,
}

impl DevForge {
    pub fn start(root: &Path) -> DevForge {
        let data_dir = root.join("forge");
        let token = root.join("forge-admin.token");
        let status = Command::new(binary("hero_devforge"))
            .args(["seed-admin", "--username", "forgeadmin", "--data-dir"])
            .arg(&data_dir)
            .arg("--token-out")
            .arg(&token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("seed-admin");
        assert!(status.success());
        let mut child = Command::new(binary("hero_devforge"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("devforge");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listen line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected devforge line {line:?}"))
            .to_owned();
        DevForge {
            guard: ProcessGuard {
                child,
                name: "hero_devforge".into(),
            },
            url,
            admin_token_file: token,
            data_dir,
        }
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(&self.admin_token_file)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `GET <url><path>` as the site admin (the tests' look at what Forge itself holds).
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("token {}", self.admin_token()))
            .send()
            .await
            .unwrap()
    }
}

/// The deployer server under test.
pub struct Server {
    pub guard: ProcessGuard,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub client: Client,
    pub env: Vec<(String, String)>,
}

pub struct ServerOptions {
    pub forge_url: String,
    pub extra_env: Vec<(String, String)>,
}

impl Server {
    pub fn env_for(root: &Path, opts: &ServerOptions) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "HERO_SOCKET_DIR".into(),
                root.join("sock").display().to_string(),
            ),
            (
                "HERO_DEPLOYER_DATA_DIR".into(),
                root.join("data").display().to_string(),
            ),
            ("HERO_DEPLOYER_FORGE_URL".into(), opts.forge_url.clone()),
            // The local backend's gateway: any free port, so tests can run side by side.
            (
                "HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN".into(),
                "127.0.0.1:0".into(),
            ),
        ];
        env.extend(opts.extra_env.iter().cloned());
        env
    }

    /// Spawns the server; does not wait for readiness.
    pub fn spawn(root: &Path, env: &[(String, String)], log: &Path) -> ProcessGuard {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(binary("hero_os_tfgrid_deployer_server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", root)
            .env("HERO_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("server");
        ProcessGuard {
            child,
            name: "server".into(),
        }
    }

    pub fn start(root: &Path, opts: ServerOptions) -> Server {
        let env = Server::env_for(root, &opts);
        let log = root.join("server.log");
        let guard = Server::spawn(root, &env, &log);
        let socket = root.join("sock/hero_os_tfgrid_deployer/rpc.sock");
        let client = Client::new(Endpoint::Unix(socket.clone()));
        let mut server = Server {
            guard,
            root: root.to_path_buf(),
            socket,
            log,
            client,
            env,
        };
        server.wait_ready();
        server
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.guard.child.try_wait().unwrap() {
                panic!("server exited early with {status}: {}", self.log_text());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready: {}",
                self.log_text()
            );
            poll_pause();
        }
    }

    /// Kill -9 and start again on the same data dir.
    pub fn restart_after_crash(&mut self) {
        self.guard.kill9();
        self.guard = Server::spawn(&self.root, &self.env, &self.log);
        self.wait_ready();
    }

    /// kill -9 from inside the server at a step: restarts it with
    /// `HERO_DEPLOYER_TEST_CRASH_AT=at` armed (a `test-hooks` build aborts when a job reaches
    /// `at`, `step` or `step:end`), lets `start` ask for the job — it may get no answer, the
    /// process may die first — waits (bounded) for the abort, and starts the server again
    /// disarmed, so the job is found and resumed by the restart.
    pub async fn crash_at<F, Fut, T>(&mut self, at: &str, start: F)
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.guard.terminate();
        self.env
            .push(("HERO_DEPLOYER_TEST_CRASH_AT".into(), at.into()));
        self.guard = Server::spawn(&self.root, &self.env, &self.log);
        self.wait_ready();
        let _ = start(self.client.clone()).await;
        let status = wait_exit(&mut self.guard.child, Duration::from_secs(60));
        assert!(!status.success(), "server should have aborted at {at}");
        self.env.pop();
        self.guard = Server::spawn(&self.root, &self.env, &self.log);
        self.wait_ready();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Sets the Forge admin token through the RPC (as the CLI does).
    pub async fn set_admin_token(&self, token: &str) {
        use hero_os_tfgrid_deployer_sdk::{methods::SecretSet, types::SecretSetParams};
        self.client
            .call::<SecretSet>(&SecretSetParams {
                slot: "deployer/forge_admin_token".into(),
                value: token.into(),
            })
            .await
            .unwrap();
    }
}

/// Forge + server, with the admin token installed.
pub struct Stack {
    pub _dir: tempfile::TempDir,
    pub forge: DevForge,
    pub server: Server,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(Vec::new()).await
    }

    pub async fn start_with(extra_env: Vec<(String, String)>) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let forge = DevForge::start(dir.path());
        let server = Server::start(
            dir.path(),
            ServerOptions {
                forge_url: forge.url.clone(),
                extra_env,
            },
        );
        server.set_admin_token(&forge.admin_token()).await;
        Stack {
            _dir: dir,
            forge,
            server,
        }
    }

    pub fn client(&self) -> &Client {
        &self.server.client
    }
}

/// Every byte of every file under `dir` (sqlite db, WAL, logs, …).
pub fn all_bytes_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
