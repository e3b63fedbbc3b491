//! `server start|stop|status`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use hero_os_tfgrid_deployer_sdk::{Client, Endpoint};

use crate::output::{self, Output};

/// The server's default Forge: marked in `server status`, so nobody talks to it unaware.
const PRODUCTION_FORGE: &str = "https://forge.ourworld.tf";

/// Name of the server binary; also what `server stop` looks for in a process's command line.
const SERVER_BIN: &str = "hero_os_tfgrid_deployer_server";

#[derive(Subcommand)]
pub enum ServerCmd {
    /// Start the server (hero_os_tfgrid_deployer_server, found next to this program).
    Start {
        /// TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run in the background, logging to --log-file, and return once it answers /health.
        #[arg(long)]
        detach: bool,
        /// Log file when detached (default <data dir>/server.log: the data dir of
        /// HERO_DEPLOYER_DATA_DIR, else of the config file, else ~/hero/var/hero_os_tfgrid_deployer).
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// Stop the server this CLI talks to (SIGTERM, then wait until it is gone).
    Stop,
    /// Check that the server answers and show what it runs with.
    Status,
}

/// A sibling executable of this one (cargo puts all workspace binaries in one directory).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot locate this executable")?;
    let path = me
        .parent()
        .map(|d| d.join(name))
        .context("executable has no directory")?;
    if !path.exists() {
        anyhow::bail!(
            "{name} not found next to {} (build the workspace)",
            me.display()
        );
    }
    Ok(path)
}

/// A directory the server will use, as the server decides it: the environment variable `env` over
/// the config file's top-level `key` (`None`: neither says). The config file is `--config`, else
/// `HERO_DEPLOYER_CONFIG`, as the server reads it.
fn server_dir(config: Option<&Path>, env: &str, key: &str) -> anyhow::Result<Option<PathBuf>> {
    if let Some(dir) = std::env::var_os(env).filter(|d| !d.is_empty()) {
        return Ok(Some(PathBuf::from(dir)));
    }
    let from_env = std::env::var_os("HERO_DEPLOYER_CONFIG")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from);
    let Some(path) = config.map(Path::to_path_buf).or(from_env) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let value: toml::Value = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    Ok(value.get(key).and_then(|d| d.as_str()).map(PathBuf::from))
}

/// The data dir the server will use (`HERO_DEPLOYER_DATA_DIR`, the config's `data_dir`, the
/// default). The log of a detached server goes there.
fn data_dir(config: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(
        server_dir(config, "HERO_DEPLOYER_DATA_DIR", "data_dir")?.unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join("hero/var/hero_os_tfgrid_deployer")
        }),
    )
}

/// The client of the server about to start: on the socket its config names (`HERO_SOCKET_DIR`,
/// else the config's `socket_dir`), else the CLI's own. Why: with a config naming another socket
/// dir, `--detach` waited for an answer on the CLI's default socket, said the server never
/// answered, and left it running.
fn client_of_started(config: Option<&Path>, cli: &Client) -> anyhow::Result<Client> {
    Ok(match server_dir(config, "HERO_SOCKET_DIR", "socket_dir")? {
        Some(dir) => Client::new(Endpoint::Unix(dir.join("hero_os_tfgrid_deployer/rpc.sock"))),
        None => cli.clone(),
    })
}

/// The line of the log that says why the server stopped (its `Error: …`), else its last line.
fn exit_reason(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Error:"))
        .or_else(|| lines.last())
        .map(|l| l.trim().to_owned())
}

/// Refuses to start a second server where one already answers (it would only fail on the data
/// dir's lock, or worse, be mistaken for the one that answers).
async fn refuse_if_running(client: &Client) -> anyhow::Result<()> {
    if client.health().await.is_ok() {
        let where_ = match client.server_info().await {
            Ok(info) => format!(" (data dir {})", info.data_dir),
            Err(_) => String::new(),
        };
        anyhow::bail!(
            "a server already answers on {}{where_}; stop it first with `hero_os_tfgrid_deployer server stop`",
            client.endpoint()
        );
    }
    Ok(())
}

pub async fn run(cmd: ServerCmd, client: &Client, out: &Output) -> anyhow::Result<()> {
    match cmd {
        ServerCmd::Start {
            config,
            detach,
            log_file,
        } => {
            let client = &client_of_started(config.as_deref(), client)?;
            refuse_if_running(client).await?;
            let server = sibling(SERVER_BIN)?;
            let mut command = std::process::Command::new(&server);
            if let Some(c) = &config {
                command.arg("--config").arg(c);
            }
            if !detach {
                let status = command.status().context("cannot start the server")?;
                if !status.success() {
                    anyhow::bail!("server exited with {status}");
                }
                return Ok(());
            }
            let log = match log_file {
                Some(log) => log,
                None => data_dir(config.as_deref())?.join("server.log"),
            };
            if let Some(dir) = log.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let file = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&log)
                    .with_context(|| format!("cannot open log file {}", log.display()))?
            };
            let mut child = command
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
                .context("cannot start the server")?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                // The child first: an answer from some other server is not ours starting.
                if let Some(status) = child.try_wait()? {
                    let reason = exit_reason(&log).unwrap_or_else(|| "no output".into());
                    anyhow::bail!(
                        "the server exited with {status}: {reason} (log {})",
                        log.display()
                    );
                }
                if client.health().await.is_ok() {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    // Not left running unseen: the operator is told it failed, so it must be gone.
                    let _ = child.kill();
                    let _ = child.wait();
                    anyhow::bail!(
                        "server did not answer on {} within 20 s and was stopped; see {}",
                        client.endpoint(),
                        log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!(
                "server running (pid {}) on {}; log {}",
                child.id(),
                client.endpoint(),
                log.display()
            );
        }
        ServerCmd::Stop => stop(client).await?,
        ServerCmd::Status => {
            let health = client.health().await?;
            let info = client.server_info().await?;
            out.show(&info, |i| {
                output::fields(&[
                    ("status", health.status.clone()),
                    ("endpoint", client.endpoint().to_string()),
                    ("version", i.version.clone()),
                    (
                        "forge",
                        if i.forge_url == PRODUCTION_FORGE {
                            format!("{} (production)", i.forge_url)
                        } else {
                            i.forge_url.clone()
                        },
                    ),
                    (
                        "forge version",
                        match (&i.forge_version, &i.forge_error) {
                            (Some(v), _) => v.clone(),
                            // Why Forge does not answer is what the operator needs here.
                            (None, Some(why)) => format!("unknown: {why}"),
                            (None, None) => "unknown (not answering?)".into(),
                        },
                    ),
                    ("data dir", i.data_dir.clone()),
                    ("secret store", i.secret_store.clone()),
                    (
                        "profiles",
                        match &i.default_profile {
                            Some(d) => format!("{} (default {d})", i.profiles.join(", ")),
                            None => i.profiles.join(", "),
                        },
                    ),
                    ("users", i.users.to_string()),
                    ("started", output::time(i.started_at)),
                ])
            });
        }
    }
    Ok(())
}

/// `server stop`: finds the server by the pid its data dir's lock file names, checks that this
/// pid really is a deployer server (pids are reused), sends SIGTERM and waits (bounded) until the
/// process is gone. Only for a server on this machine (a unix socket endpoint).
async fn stop(client: &Client) -> anyhow::Result<()> {
    if !matches!(client.endpoint(), Endpoint::Unix(_)) {
        anyhow::bail!(
            "server stop works on a local server only (a unix socket endpoint), not {}",
            client.endpoint()
        );
    }
    let info = client
        .server_info()
        .await
        .with_context(|| format!("no server answers on {}", client.endpoint()))?;
    let lock = Path::new(&info.data_dir).join("server.lock");
    let pid: i32 = std::fs::read_to_string(&lock)
        .with_context(|| format!("cannot read {}", lock.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{} does not name a pid", lock.display()))?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains(SERVER_BIN) {
        anyhow::bail!(
            "{} names pid {pid}, which is not a {SERVER_BIN} process; not stopping it",
            lock.display()
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .with_context(|| format!("cannot signal pid {pid}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("server pid {pid} did not exit within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("server stopped (pid {pid}, data dir {})", info.data_dir);
    Ok(())
}

/// A live process: exists and is not a zombie (a detached server is reparented, and its new
/// parent may reap it late).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X')),
        Err(_) => false,
    }
}
