//! `hero_os_tfgrid_deployer_server`: the deployer's OpenRPC backend.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hero_os_tfgrid_deployer_server::config::Config;

/// The Hero OS ThreeFold Grid deployer server. Listens on
/// `$HERO_SOCKET_DIR/hero_os_tfgrid_deployer/rpc.sock` (and on a TCP address only when configured).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file (unknown keys are rejected). Environment `HERO_DEPLOYER_*` overrides it.
    #[arg(long, env = "HERO_DEPLOYER_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    let env = std::env::vars().filter(|(k, _)| k != "HERO_DEPLOYER_CONFIG");
    let config = Config::load(args.config.as_deref(), env).context("invalid configuration")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Installed before `serve` starts answering, not when its shutdown future is first
        // polled: a SIGTERM sent as soon as the socket answered (a supervisor, a test) found no
        // handler yet and killed the process with the signal instead of a clean exit.
        let shutdown = shutdown_signal();
        hero_os_tfgrid_deployer_server::serve(config, shutdown)
            .await
            .map_err(anyhow::Error::from)
    })
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (inside the
/// runtime), not when the returned future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move { wait_for(term, int).await }
}

async fn wait_for(
    term: std::io::Result<tokio::signal::unix::Signal>,
    int: std::io::Result<tokio::signal::unix::Signal>,
) {
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
