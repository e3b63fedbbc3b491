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
    // Variables of the other programs share the prefix: the CLI's endpoint and the dashboard's
    // settings may well be exported in the same shell, and must not stop the server.
    let env = std::env::vars().filter(|(k, _)| {
        k != "HERO_DEPLOYER_CONFIG"
            && k != "HERO_DEPLOYER_ENDPOINT"
            && !k.starts_with("HERO_DEPLOYER_ADMIN_")
    });
    let config = Config::load(args.config.as_deref(), env).context("invalid configuration")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Installed before anything is bound: a SIGTERM that comes as soon as the socket answers
        // must stop the server cleanly, not kill it with the default action.
        let shutdown = shutdown_signal().context("cannot install the signal handlers")?;
        hero_os_tfgrid_deployer_server::serve(config, shutdown)
            .await
            .map_err(anyhow::Error::from)
    })
}

/// Resolves on SIGTERM or SIGINT; the handlers are in place when this returns.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
