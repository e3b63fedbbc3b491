//! Helpers for the provisioning tests, on top of `support` (dev Forge + server binaries): a
//! config with fast retries and short deadlines, job following, gateway health checks through
//! the real local gateway, and "nothing left behind" checks (processes, ports, directories,
//! routes).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::Client;

use crate::support::{Server, ServerOptions, Stack};

/// `[provision]` settings that keep failing paths short: 3 attempts, 50 ms backoff, a 3 s hang
/// detector; and a second profile, `minimal`. The polling steps get 20 s: on a loaded 2-core
/// machine the sandbox web stack can take more than 4 s to answer, and a success-path test must
/// not fail on that. Tests that make a polling step fail use [`stack_failing_fast`] (4 s).
pub const FAST_CONFIG: &str = r#"
[provision]
max_attempts = 3
backoff_base_ms = 50
backoff_max_ms = 200
poll_ms = 100
heartbeat_ms = 200
stale_after_ms = 3000
reaper_interval_ms = 200

[provision.step_deadline_secs]
wait_ssh = 20
verify_health = 20

# A second service profile, for redeploys.
[provision.profiles]
minimal = ["proxy", "cockpit"]
"#;

/// Starts Forge + server with [`FAST_CONFIG`], a faults file (used only by `test-hooks`
/// builds) and `extra` environment.
pub async fn stack(extra: Vec<(String, String)>) -> (Stack, PathBuf) {
    stack_with(FAST_CONFIG.to_owned(), extra).await
}

/// [`stack`] with 4 s polling-step deadlines, for the tests that wait for `wait_ssh` or
/// `verify_health` to give up.
pub async fn stack_failing_fast(extra: Vec<(String, String)>) -> (Stack, PathBuf) {
    let long = "wait_ssh = 20\nverify_health = 20\n";
    assert!(FAST_CONFIG.contains(long), "FAST_CONFIG's deadlines moved");
    let config = FAST_CONFIG.replace(long, "wait_ssh = 4\nverify_health = 4\n");
    stack_with(config, extra).await
}

/// The secret slot of the grid account's mnemonic, and the stand-in words [`grid_stack`] puts there.
pub const MNEMONIC_SLOT: &str = "deployer/tfgrid_mnemonic";

/// [`stack`] with the opentofu backend's prerequisites in place (an executable `tofu`, `/bin/true`, which never
/// deploys anything; network `main`; a mnemonic in [`MNEMONIC_SLOT`]) and gridproxy at `gridproxy_url`.
pub async fn grid_stack(gridproxy_url: &str) -> Stack {
    let config = format!(
        "{FAST_CONFIG}\n[provision.opentofu]\nbinary = \"/bin/true\"\n[provision.grid]\nnetwork = \"main\"\n"
    );
    let env = vec![(
        "HERO_DEPLOYER_GRIDPROXY_URL".to_owned(),
        gridproxy_url.to_owned(),
    )];
    let stack = stack_with(config, env).await.0;
    stack
        .client()
        .call::<hero_os_tfgrid_deployer_sdk::methods::SecretSet>(
            &hero_os_tfgrid_deployer_sdk::types::SecretSetParams {
                slot: MNEMONIC_SLOT.into(),
                value: "test mnemonic words for a stand in".into(),
            },
        )
        .await
        .unwrap();
    stack
}

/// [`stack`] with another config file text (e.g. [`FAST_CONFIG`] plus a section).
pub async fn stack_with(config_text: String, extra: Vec<(String, String)>) -> (Stack, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deployer.toml");
    std::fs::write(&config, config_text).unwrap();
    let faults = dir.path().join("faults.json");
    std::fs::write(&faults, "{}").unwrap();
    let mut env = vec![(
        "HERO_DEPLOYER_CONFIG".to_owned(),
        config.display().to_string(),
    )];
    if cfg!(feature = "test-hooks") {
        env.push((
            "HERO_DEPLOYER_TEST_FAULTS_FILE".to_owned(),
            faults.display().to_string(),
        ));
    }
    env.extend(extra);
    let forge = crate::support::DevForge::start(dir.path());
    let server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: forge.url.clone(),
            extra_env: env,
        },
    );
    server.set_admin_token(&forge.admin_token()).await;
    (
        Stack {
            _dir: dir,
            forge,
            server,
        },
        faults,
    )
}

pub fn set_faults(path: &Path, json: serde_json::Value) {
    std::fs::write(path, json.to_string()).unwrap();
}

/// Provisioning options that ask for `backend` (and a pinned node), everything else default.
pub fn on_backend(backend: &str, node_id: Option<u32>) -> Option<ProvisionOptions> {
    Some(ProvisionOptions {
        backend: Some(backend.into()),
        profile: None,
        node_id,
        expires_in_days: None,
    })
}

pub async fn new_user(c: &Client, name: &str) -> i64 {
    c.create_user(name, None, None).await.unwrap().user_id
}

/// Follows a job to its end (long-poll, no sleeps), returning it and every event.
pub async fn follow(c: &Client, job_id: JobId) -> (Job, Vec<JobEvent>) {
    let mut events = Vec::new();
    let job = tokio::time::timeout(
        Duration::from_secs(120),
        c.follow_job(job_id, |e| events.push(e.clone())),
    )
    .await
    .expect("job did not end within 120 s")
    .unwrap();
    (job, events)
}

/// Long-polls until an event matching `pred` exists.
pub async fn wait_event(c: &Client, job_id: JobId, pred: impl Fn(&JobEvent) -> bool) -> JobEvent {
    let mut after = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = c.job_events(job_id, after, 5_000).await.unwrap();
        if let Some(e) = page.events.iter().find(|e| pred(e)) {
            return e.clone();
        }
        after = page.last_seq;
        assert!(!page.done, "job ended before the awaited event");
        assert!(tokio::time::Instant::now() < deadline, "event never came");
    }
}

/// Every step's events in order: its "started" first, its "done" last, nothing of a step
/// before it started (the job recorder queues a step's records in call order, and the one
/// writer commits them in that order).
pub fn assert_steps_in_order(events: &[JobEvent], steps: &[&str]) {
    for (i, name) in steps.iter().enumerate() {
        let of_step: Vec<&JobEvent> = events
            .iter()
            .filter(|e| e.step.as_deref() == Some(*name))
            .collect();
        let first = of_step.first().map(|e| e.message.as_str()).unwrap_or("");
        let last = of_step.last().map(|e| e.message.as_str()).unwrap_or("");
        let n = steps.len();
        assert!(
            first.starts_with(&format!("step {}/{n} {name}: started", i + 1)),
            "first event of {name} is {first:?}\n{}",
            messages(events)
        );
        assert!(
            last.starts_with(&format!("step {}/{n} {name}: done in", i + 1)),
            "last event of {name} is {last:?}\n{}",
            messages(events)
        );
    }
}

pub fn messages(events: &[JobEvent]) -> String {
    events
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `GET <url>health` through the local gateway (the URL's host name does not resolve: connect
/// to the gateway's loopback port with the right Host header).
pub async fn gateway_health(url: &str) -> Result<u16, String> {
    let parsed = reqwest::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap().to_owned();
    let port = parsed.port().unwrap();
    let client = reqwest::Client::builder()
        .resolve(&host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(format!("{}health", url))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// An anonymous `GET <url><path>` through the local gateway, redirects not followed: status and
/// `Location`.
pub async fn gateway_get(url: &str, path: &str) -> (u16, Option<String>) {
    let parsed = reqwest::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap().to_owned();
    let port = parsed.port().unwrap();
    let client = reqwest::Client::builder()
        .resolve(&host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = client
        .get(format!("{}{}", url, path.trim_start_matches('/')))
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), location)
}

pub fn local_root(stack: &Stack) -> PathBuf {
    stack.server.data_dir().join("local")
}

pub fn sandbox_dir(stack: &Stack, name: &str) -> PathBuf {
    local_root(stack).join("sandboxes").join(name)
}

/// Names of every sandbox directory.
pub fn sandboxes(stack: &Stack) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(local_root(stack).join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Route names in the local gateway's persisted table.
pub fn routes(stack: &Stack) -> Vec<String> {
    let text = std::fs::read_to_string(local_root(stack).join("gateway/routes.json"))
        .unwrap_or_else(|_| "{}".into());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut names: Vec<String> = v["routes"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// PIDs whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A zombie is dead (only not yet reaped by its parent, e.g. this test process).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Ports of a sandbox, from its record.
pub fn sandbox_ports(dir: &Path) -> (u16, u16) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json")).unwrap()).unwrap();
    (
        v["ssh_port"].as_u64().unwrap() as u16,
        v["web_port"].as_u64().unwrap() as u16,
    )
}

pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Deletes every sandbox process left by a test (by PID, from the cmdline scan), so a failing
/// test leaves nothing running.
pub struct SandboxReaper(pub PathBuf);

impl Drop for SandboxReaper {
    fn drop(&mut self) {
        let needle = format!("{}/", self.0.display());
        for pid in processes_mentioning(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The admin account's OAuth apps on the dev Forge that `register_sso` made for `username`.
pub async fn forge_apps(stack: &Stack, username: &str) -> Vec<serde_json::Value> {
    let apps: Vec<serde_json::Value> = stack
        .forge
        .admin_get("/api/v1/user/applications/oauth2?limit=50")
        .await
        .json()
        .await
        .unwrap();
    apps.into_iter()
        .filter(|a| {
            a["name"].as_str().is_some_and(|n| {
                n.starts_with("hero_os_tfgrid_deployer hero_u")
                    && n.ends_with(&format!("_{username}"))
            })
        })
        .collect()
}

/// The client secret `register_sso` stored for `user_id`, read over the local socket (audited).
pub async fn stored_client_secret(stack: &Stack, user_id: i64) -> Option<String> {
    use hero_os_tfgrid_deployer_sdk::methods::SecretGet;
    use hero_os_tfgrid_deployer_sdk::types::SecretSlotParams;
    stack
        .client()
        .call::<SecretGet>(&SecretSlotParams {
            slot: format!("deployer/users/{user_id}/oauth_client_secret"),
        })
        .await
        .ok()
        .map(|v| v.value)
}

/// Whether Forge accepts `client_id:secret` as the app's client credentials (its introspection
/// endpoint authenticates the client first): proves a stored secret is the app's current one.
pub async fn client_secret_works(stack: &Stack, client_id: &str, secret: &str) -> bool {
    reqwest::Client::new()
        .post(format!("{}/login/oauth/introspect", stack.forge.url))
        .basic_auth(client_id, Some(secret))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap()
        .status()
        == 200
}
