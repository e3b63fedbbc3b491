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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Write one secret of the proxy's store and exit.
    Secret {
        #[command(subcommand)]
        op: SecretOp,
    },
}

#[derive(clap::Subcommand)]
enum SecretOp {
    /// `hero_proxy secret set SLOT < value`: the value is read from stdin (never argv, never the
    /// environment) — how a deployer seeds a machine's SSO secrets over SSH before the proxy starts.
    Set {
        /// Slot name, e.g. `cockpit/FORGE_OAUTH_CLIENT_SECRET`.
        slot: String,
        /// The store's directory (else the configuration's `secrets_dir`); the proxy's config may not
        /// exist yet when a machine is being set up.
        #[arg(long)]
        secrets_dir: Option<PathBuf>,
    },
}

/// `secret set`: one trailing newline is dropped (`echo value |` works), nothing else is changed;
/// an empty value is refused rather than stored as "set".
async fn secret_set(
    config: Option<&std::path::Path>,
    slot: &str,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    use hero_secrets::SecretStore as _;
    use std::io::Read as _;
    let dir = match dir {
        Some(d) => d,
        None => hero_proxy::Config::load(config)
            .context("loading configuration (or give --secrets-dir)")?
            .secrets_dir(),
    };
    let mut value = String::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut value)
        .context("reading the value from stdin (UTF-8, at most 1 MiB)")?;
    let value = zeroize::Zeroizing::new(value);
    let trimmed = value.strip_suffix('\n').unwrap_or(&value);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    anyhow::ensure!(
        !trimmed.is_empty(),
        "empty value on stdin: nothing stored in {slot}"
    );
    let store = hero_secrets::FileSecretStore::open(&dir)
        .with_context(|| format!("opening the secret store {}", dir.display()))?;
    store
        .set(slot, trimmed)
        .await
        .with_context(|| format!("storing {slot}"))?;
    println!("stored {slot}");
    Ok(())
}

/// mimalloc instead of glibc's malloc: the proxy allocates and frees small header maps and buffers on every
/// request, and glibc's arenas cost about a sixth of its user CPU under load (BENCHMARKS.md, "hero_proxy").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    if let Some(Command::Secret {
        op: SecretOp::Set { slot, secrets_dir },
    }) = args.command
    {
        return secret_set(args.config.as_deref(), &slot, secrets_dir).await;
    }
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
