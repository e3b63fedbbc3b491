//! `demo [username]`: one command from nothing to a working demo VM. Starts the dev Forge
//! (`hero_devforge`) and the server with the local backend in a demo directory (both found next to
//! this executable), seeds the Forge admin token into the server's secret store over the local
//! socket (never argv or env), creates the user, provisions end to end with live progress, and
//! prints the URL and credentials, and starts the admin dashboard (dev sign-in, loopback). Ctrl-C decommissions the VM (unless `--keep`) and stops both.

use std::io::{BufRead, BufReader};
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
    /// Port of the admin dashboard (dev sign-in, loopback only): http://127.0.0.1:<port>/.
    #[arg(long, default_value_t = 8090)]
    pub admin_port: u16,
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

/// A child killed (by PID, through `Child::kill`) when dropped.
struct ChildGuard(Child);

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
        let status = Command::new(&forge)
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
    let mut child = Command::new(&forge)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(log)
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
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))?;
    let child = Command::new(&server)
        .env("HERO_SOCKET_DIR", dir.join("sock"))
        .env("HERO_DEPLOYER_DATA_DIR", dir.join("data"))
        .env("HERO_DEPLOYER_FORGE_URL", forge_url)
        .env("HERO_DEPLOYER_BACKEND", "local")
        .env(
            "HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN",
            format!("127.0.0.1:{gateway_port}"),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start hero_os_tfgrid_deployer_server")?;
    Ok((
        ChildGuard(child),
        dir.join("sock/hero_os_tfgrid_deployer/rpc.sock"),
    ))
}

/// The admin dashboard in dev mode on loopback TCP, reading the allowlist from the demo server's
/// secret store. Returns once it answers `/health`.
async fn start_dashboard(
    dir: &Path,
    socket: &Path,
    port: u16,
) -> anyhow::Result<(ChildGuard, String)> {
    let admin = sibling("hero_os_tfgrid_deployer_admin")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("admin.log"))?;
    let listen = format!("127.0.0.1:{port}");
    let mut child = ChildGuard(
        Command::new(&admin)
            .args(["--auth-mode", "dev", "--no-socket", "--listen", &listen])
            .arg("--server")
            .arg(format!("unix:{}", socket.display()))
            .arg("--secrets-dir")
            .arg(dir.join("data/secrets"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start hero_os_tfgrid_deployer_admin")?,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!(
                "the dashboard exited with {status}; see {}",
                dir.join("admin.log").display()
            );
        }
        if tokio::net::TcpStream::connect(&listen).await.is_ok() {
            return Ok((child, format!("http://{listen}/")));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the dashboard did not answer within 30 s; see {}",
            dir.join("admin.log").display()
        );
    }
}

/// Waits until the server answers `/health`, or its process exits.
async fn wait_ready(client: &Client, server: &mut ChildGuard, log: &Path) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some(status) = server.0.try_wait()? {
            anyhow::bail!("the server exited with {status}; see {}", log.display());
        }
        if client.health().await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the server did not answer within 30 s; see {}",
            log.display()
        );
    }
}

pub async fn run(args: DemoArgs, out: &Output) -> anyhow::Result<()> {
    hero_os_tfgrid_deployer_sdk::username::validate(&args.username)?;
    let dir = demo_dir(&args);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!("demo directory: {}", dir.display());
    let (_forge, forge_url, token_file) = start_forge(&dir)?;
    eprintln!("dev Forge (hero_devforge) at {forge_url}");
    let (mut server, socket) = start_server(&dir, &forge_url, args.gateway_port)?;
    let client = Client::new(Endpoint::Unix(socket.clone()));
    wait_ready(&client, &mut server, &dir.join("server.log")).await?;
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

    // The dashboard's dev identity must be on the admin allowlist.
    let allowlist = SecretSlotParams {
        slot: hero_secrets::slots::ADMIN_FORGE_USERS.into(),
    };
    if client.call::<SecretGet>(&allowlist).await.is_err() {
        client
            .call::<SecretSet>(&SecretSetParams {
                slot: allowlist.slot.clone(),
                value: "dev-admin".into(),
            })
            .await?;
    }
    let dashboard = if args.no_dashboard {
        None
    } else {
        let (guard, url) = start_dashboard(&dir, &socket, args.admin_port).await?;
        eprintln!("admin dashboard at {url} (dev sign-in as dev-admin)");
        Some((guard, url))
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
    println!("  URL:            {url}");
    println!("  Forge:          {forge_url}");
    println!("  Forge username: {}", user.forge_username);
    println!("  Forge password: {password}");
    println!("  health:         curl {url}health");
    println!(
        "  SSH key:        hero_os_tfgrid_deployer --server {} vm ssh-key {} --out key",
        socket.display(),
        user.forge_username
    );
    if let Some((_, url)) = &dashboard {
        println!("  Dashboard:      {url}  (dev sign-in as dev-admin)");
    }
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
