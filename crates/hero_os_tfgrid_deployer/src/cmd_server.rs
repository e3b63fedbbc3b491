//! `server start|status`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use hero_os_tfgrid_deployer_sdk::Client;

use crate::output::{self, Output};

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
        /// Log file when detached (default <data dir>/server.log, i.e. ~/hero/var/hero_os_tfgrid_deployer/server.log).
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
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

pub async fn run(cmd: ServerCmd, client: &Client, out: &Output) -> anyhow::Result<()> {
    match cmd {
        ServerCmd::Start {
            config,
            detach,
            log_file,
        } => {
            let server = sibling("hero_os_tfgrid_deployer_server")?;
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
            let log = log_file.unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join("hero/var/hero_os_tfgrid_deployer/server.log")
            });
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .with_context(|| format!("cannot open log file {}", log.display()))?;
            let mut child = command
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
                .context("cannot start the server")?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if client.health().await.is_ok() {
                    break;
                }
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("server exited with {status}; see {}", log.display());
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("server did not answer within 20 s; see {}", log.display());
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
        ServerCmd::Status => {
            let health = client.health().await?;
            let info = client.server_info().await?;
            out.show(&info, |i| {
                output::fields(&[
                    ("status", health.status.clone()),
                    ("endpoint", client.endpoint().to_string()),
                    ("version", i.version.clone()),
                    ("forge", i.forge_url.clone()),
                    (
                        "forge version",
                        i.forge_version
                            .clone()
                            .unwrap_or_else(|| "unknown (not answering?)".into()),
                    ),
                    ("data dir", i.data_dir.clone()),
                    ("secret store", i.secret_store.clone()),
                    ("users", i.users.to_string()),
                    ("started", output::time(i.started_at)),
                ])
            });
        }
    }
    Ok(())
}
