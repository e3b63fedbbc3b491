//! hero_proxy binary: parse arguments, load config, open the secret store, run until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

/// The SSO edge of the Hero stack.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (HERO_PROXY_* environment variables override it).
    #[arg(long, short, env = "HERO_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Print the assertion verification key (JWKS) and exit.
    #[arg(long)]
    print_key: bool,
}

/// One single-threaded runtime here plus `workers - 1` more (see `Config::workers`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERO_PROXY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let cfg = hero_proxy::Config::load(args.config.as_deref()).context("loading configuration")?;
    let secrets = Arc::new(
        hero_secrets::FileSecretStore::open(&cfg.secrets_dir())
            .context("opening the secret store")?,
    );
    if args.print_key {
        // Only the public half; nothing is bound, so this is safe next to a running proxy.
        let signer = hero_proxy::app::load_signer(secrets.as_ref())
            .await
            .context("loading the signing key")?;
        println!("{}", signer.public_jwks());
        return Ok(());
    }
    let running = hero_proxy::start(cfg, secrets, Arc::new(hero_proxy::SystemClock))
        .await
        .context("starting")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    drop(running);
    Ok(())
}
