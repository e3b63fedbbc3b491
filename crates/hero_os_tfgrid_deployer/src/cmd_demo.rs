//! `demo [username]`: one command from nothing to a working demo VM. Starts the dev Forge
//! (`hero_devforge`) and the server with the local backend in a demo directory (both found next to
//! this executable), seeds the Forge admin token into the server's secret store over the local
//! socket (never argv or env), creates the user, provisions end to end with live progress, and
//! prints the URL and credentials for the tester, and starts the admin dashboard behind its SSO edge
//! with an operator account on the dev Forge (`demo_edge.rs`; dev sign-in only with `--dev-sign-in`).
//! Ctrl-C decommissions the VM (unless `--keep`) and stops everything.
//!
//! The children run in process groups of their own: a terminal's Ctrl-C goes to the whole
//! foreground group, and a server that died with the demo could not decommission anything. Only
//! the demo sees the SIGINT; it decommissions first, then stops the children by PID.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hero_os_tfgrid_deployer_sdk::methods::{SecretGet, SecretSet};
use hero_os_tfgrid_deployer_sdk::types::{SecretSetParams, SecretSlotParams};
use hero_os_tfgrid_deployer_sdk::{Client, Endpoint, ErrorKind};

use crate::cmd_job::{finish, follow};
use crate::cmd_server::sibling;
use crate::demo_edge;
use crate::output::Output;

#[derive(Args)]
pub struct DemoArgs {
    /// Username of the demo user.
    #[arg(default_value = "demo")]
    pub username: String,
    /// Demo directory (Forge data, server data, sockets, logs).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Port of the local gateway (the demo URL is http://<username>.localhost:<port>/).
    #[arg(long, default_value_t = 8088)]
    pub gateway_port: u16,
    /// Port of the admin dashboard's SSO edge (loopback): http://127.0.0.1:<port>/.
    #[arg(long, default_value_t = 8090)]
    pub admin_port: u16,
    /// Run the dashboard in its development sign-in mode (anyone on this machine is `dev-admin`,
    /// no Forge sign-in) instead of behind hero_proxy.
    #[arg(long)]
    pub dev_sign_in: bool,
    /// Do not start the admin dashboard.
    #[arg(long)]
    pub no_dashboard: bool,
    /// Leave the VM running on exit (default: decommission it on Ctrl-C).
    #[arg(long)]
    pub keep: bool,
    /// Do not wait for Ctrl-C: right after printing the URL, decommission (unless `--keep`) and stop.
    #[arg(long)]
    pub no_wait: bool,
}

/// The dashboard as started: behind its SSO edge, or in dev sign-in mode on loopback.
enum Dashboard {
    Edge(demo_edge::DashboardEdge),
    /// The guard only stops the child when dropped.
    Dev(#[allow(dead_code)] ChildGuard, String),
}

/// A child killed (by PID, through `Child::kill`) when dropped.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo_dir(args: &DemoArgs) -> PathBuf {
    args.dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join("hero/var/hero_os_tfgrid_deployer_demo")
    })
}

fn start_forge(dir: &Path) -> anyhow::Result<(ChildGuard, String, PathBuf)> {
    let forge = sibling("hero_devforge")?;
    let data = dir.join("forge");
    let token = dir.join("forge-admin.token");
    if !token.exists() {
        let status = without_operator_env(&mut Command::new(&forge))
            .args(["seed-admin", "--username", "demoadmin", "--data-dir"])
            .arg(&data)
            .arg("--token-out")
            .arg(&token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run hero_devforge seed-admin")?;
        anyhow::ensure!(
            status.success(),
            "hero_devforge seed-admin failed with {status}"
        );
    }
    let log = std::fs::File::create(dir.join("forge.log"))?;
    let mut child = without_operator_env(&mut Command::new(&forge))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start hero_devforge")?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout from hero_devforge")?;
    let guard = ChildGuard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line from hero_devforge: {line:?}"))?
        .to_owned();
    Ok((guard, url, token))
}

fn start_server(
    dir: &Path,
    forge_url: &str,
    gateway_port: u16,
) -> anyhow::Result<(ChildGuard, PathBuf)> {
    let server = sibling("hero_os_tfgrid_deployer_server")?;
    let child = spawn_logged(
        Command::new(&server)
            .env("HERO_SOCKET_DIR", dir.join("sock"))
            .env("HERO_DEPLOYER_DATA_DIR", dir.join("data"))
            .env("HERO_DEPLOYER_FORGE_URL", forge_url)
            .env("HERO_DEPLOYER_BACKEND", "local")
            .env(
                "HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN",
                format!("127.0.0.1:{gateway_port}"),
            ),
        &dir.join("server.log"),
    )
    .context("cannot start hero_os_tfgrid_deployer_server")?;
    Ok((
        ChildGuard(child),
        dir.join("sock/hero_os_tfgrid_deployer/rpc.sock"),
    ))
}

/// The admin dashboard in dev mode on loopback TCP (`--dev-sign-in`), reading the allowlist from
/// the demo server's secret store. Returns once it accepts connections.
async fn start_dev_dashboard(
    dir: &Path,
    socket: &Path,
    port: u16,
) -> anyhow::Result<(ChildGuard, String)> {
    let admin = sibling("hero_os_tfgrid_deployer_admin")?;
    let listen = format!("127.0.0.1:{port}");
    let mut child = ChildGuard(
        spawn_logged(
            Command::new(&admin)
                .args(["--auth-mode", "dev", "--no-socket", "--listen", &listen])
                .arg("--server")
                .arg(format!("unix:{}", socket.display()))
                .arg("--secrets-dir")
                .arg(dir.join("data/secrets")),
            &dir.join("admin.log"),
        )
        .context("cannot start hero_os_tfgrid_deployer_admin")?,
    );
    let probe = listen.clone();
    wait_for("the dashboard", &mut child, &dir.join("admin.log"), || {
        let p = probe.clone();
        async move { tokio::net::TcpStream::connect(p).await.is_ok() }
    })
    .await?;
    Ok((child, format!("http://{listen}/")))
}

/// Keeps the operator's `HERO_*` environment away from a demo child: only what the demo sets on
/// `cmd` itself reaches it. Why: the demo's children are the real binaries, which read their
/// config from the environment, so an exported `HERO_DEPLOYER_CONFIG`, `…_FORGE_ADMIN_TOKEN_FILE`
/// or `…_SECRETS_BACKEND` of the operator's shell made the throw-away demo server load the
/// production config, token and secrets.
pub(crate) fn without_operator_env(cmd: &mut Command) -> &mut Command {
    let set: Vec<std::ffi::OsString> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HERO_") && !set.contains(&k) {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// Starts a demo child in a process group of its own (the demo alone gets the terminal's Ctrl-C),
/// stdin closed, stdout and stderr appended to `log`, without the operator's `HERO_*` environment
/// ([`without_operator_env`]).
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Ok(without_operator_env(cmd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?)
}

/// Waits (30 s at most) until `ready` says yes, or fails early with the reason from `log` when the
/// child exits first.
pub(crate) async fn wait_for<F, Fut>(
    what: &str,
    child: &mut ChildGuard,
    log: &Path,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!(
                "{what} exited ({status}): {}; see {}",
                last_error_line(log),
                log.display()
            );
        }
        if ready().await {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} did not answer within 30 s; see {}",
            log.display()
        );
    }
}

/// The reason a child gave for exiting at start: the last line of its log that reads as an
/// error (both binaries end with `Error: <reason>` or a log line at ERROR level), else the last
/// line. Shown on the terminal so "address in use" is not hidden behind "see server.log".
fn last_error_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Error:") || l.contains("ERROR"))
        .or(lines.last())
        .map(|l| l.trim_start_matches("Error:").trim().to_owned())
        .unwrap_or_else(|| "no reason in its log".to_owned())
}

pub async fn run(args: DemoArgs, out: &Output) -> anyhow::Result<()> {
    hero_os_tfgrid_deployer_sdk::username::validate(&args.username)?;
    let dir = demo_dir(&args);
    // 0700: it holds the operator's password, the Forge admin token and the stores' keys.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let operator = if args.dev_sign_in {
        None
    } else {
        Some(demo_edge::ensure_operator(&dir)?)
    };
    eprintln!("demo directory: {}", dir.display());
    let (_forge, forge_url, token_file) = start_forge(&dir)?;
    eprintln!("dev Forge (hero_devforge) at {forge_url}");
    let (mut server, socket) = start_server(&dir, &forge_url, args.gateway_port)?;
    let client = Client::new(Endpoint::Unix(socket.clone()));
    wait_for(
        "the server",
        &mut server,
        &dir.join("server.log"),
        || async { client.health().await.is_ok() },
    )
    .await?;
    eprintln!("deployer server on {}", socket.display());

    // The admin token goes from its 0600 file to the secret store inside the RPC body.
    let token =
        std::fs::read_to_string(&token_file).context("cannot read the Forge admin token")?;
    client
        .call::<SecretSet>(&SecretSetParams {
            slot: hero_secrets::slots::FORGE_ADMIN_TOKEN.into(),
            value: token.trim().to_owned(),
        })
        .await?;

    // Who is admin: the operator (or, with --dev-sign-in, the dashboard's dev identity), added to
    // whatever the store already lists. The VMs' edges get this list too (`configure_sso`).
    let admin_login = operator
        .as_ref()
        .map_or("dev-admin", |o| o.username.as_str());
    let allowlist = SecretSlotParams {
        slot: hero_secrets::slots::ADMIN_FORGE_USERS.into(),
    };
    let mut admins = client
        .call::<SecretGet>(&allowlist)
        .await
        .map(|v| hero_secrets::slots::parse_login_list(&v.value))
        .unwrap_or_default();
    if admins.insert(admin_login.to_ascii_lowercase()) {
        client
            .call::<SecretSet>(&SecretSetParams {
                slot: allowlist.slot.clone(),
                value: admins.into_iter().collect::<Vec<_>>().join(","),
            })
            .await?;
    }
    let dashboard = match (&operator, args.no_dashboard) {
        (_, true) => None,
        (None, false) => {
            let (guard, url) = start_dev_dashboard(&dir, &socket, args.admin_port).await?;
            eprintln!("admin dashboard at {url} (dev sign-in as dev-admin)");
            Some(Dashboard::Dev(guard, url))
        }
        (Some(op), false) => {
            let edge = demo_edge::start(&dir, &socket, &forge_url, args.admin_port, op).await?;
            eprintln!("admin dashboard at {} (behind hero_proxy)", edge.url);
            Some(Dashboard::Edge(edge))
        }
    };

    let user = match client.create_user(&args.username, None, None).await {
        Ok(r) => r.user,
        Err(e) if e.kind() == Some(ErrorKind::AlreadyExists) => {
            client.find_user(&args.username).await?
        }
        Err(e) => return Err(e.into()),
    };
    let existing = client.get_vm(user.user_id).await?;
    let url = match existing
        .vm
        .filter(|v| v.state == "ready")
        .and_then(|v| v.url)
    {
        Some(url) => {
            eprintln!("{} already has a ready VM", user.forge_username);
            url
        }
        None => {
            let job = client.provision_vm(user.user_id, None).await?;
            eprintln!("provisioning {} (job {})", user.forge_username, job.job_id);
            let job = follow(&client, job.job_id, out).await?;
            finish(&job, out)?;
            job.result.map(|r| r.url).unwrap_or_default()
        }
    };
    let password = client
        .reveal_initial_password(user.user_id)
        .await
        .map(|p| p.initial_password)
        .unwrap_or_else(|e| format!("(not available: {e})"));
    println!();
    println!("Hero OS demo for {} is ready", user.forge_username);
    println!("For the tester (send the password separately from the link):");
    println!("  URL:            {url}");
    println!("  Forge username: {}", user.forge_username);
    println!("  Forge password: {password}");
    println!("For the operator:");
    match &dashboard {
        Some(Dashboard::Edge(edge)) => {
            println!("  Dashboard:      {}", edge.url);
            if let Some(op) = &operator {
                println!(
                    "  Sign in:        with Forge as {} / {}",
                    op.username,
                    op.password.as_str()
                );
            }
        }
        Some(Dashboard::Dev(_, url)) => {
            println!("  Dashboard:      {url}  (dev sign-in as dev-admin)")
        }
        None => {}
    }
    println!("  Forge:          {forge_url}");
    println!("  health:         curl {url}health");
    println!(
        "  CLI:            export HERO_DEPLOYER_ENDPOINT=unix:{}",
        socket.display()
    );
    println!(
        "  SSH key:        hero_os_tfgrid_deployer --server {} vm ssh-key {} --out key",
        socket.display(),
        user.forge_username
    );
    if !args.no_wait {
        println!(
            "\nPress Ctrl-C to {}stop.",
            if args.keep {
                ""
            } else {
                "decommission the VM and "
            }
        );
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
    }
    if !args.keep {
        eprintln!("decommissioning {}", user.forge_username);
        let job = client.decommission_vm(user.user_id).await?;
        let job = follow(&client, job.job_id, out).await?;
        finish(&job, out)?;
    }
    drop(dashboard);
    drop(server);
    Ok(())
}
