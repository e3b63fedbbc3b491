//! `hero_os_tfgrid_deployer_admin`: the deployer's admin dashboard.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hero_identity::AssertionVerifier;
use hero_os_tfgrid_deployer_admin::auth::AuthMode;
use hero_os_tfgrid_deployer_admin::serve::{admin_socket, bind_unix, SERVICE};
use hero_os_tfgrid_deployer_admin::{router, AppState};
use hero_os_tfgrid_deployer_sdk::{Client, Endpoint};
use hero_secrets::{FileSecretStore, HeroProcSecretStore, SecretStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Verify hero_proxy's signed `X-Hero-Assertion` (needs --proxy-key). Production.
    Signed,
    /// Trust the plain `X-Hero-*` headers: only when nothing but hero_proxy can reach the dashboard.
    Headers,
    /// DEVELOPMENT ONLY: loopback only, unsigned headers or a fixed --dev-user, with a banner.
    Dev,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SecretsBackend {
    File,
    HeroProc,
}

/// Admin dashboard of the Hero OS ThreeFold Grid deployer. Serves
/// `$HERO_SOCKET_DIR/hero_os_tfgrid_deployer/admin.sock` (and a TCP address only with --listen),
/// behind hero_proxy's SSO; talks to the deployer server only through its SDK.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The deployer server, in the CLI's syntax: `unix:/path/rpc.sock`, a socket path,
    /// `http://host:port` or `host:port`. Default `$HERO_SOCKET_DIR/hero_os_tfgrid_deployer/rpc.sock`.
    #[arg(long, env = "HERO_DEPLOYER_ADMIN_SERVER")]
    server: Option<String>,
    /// Root of Hero sockets (default ~/hero/var/sockets).
    #[arg(long, env = "HERO_SOCKET_DIR")]
    socket_dir: Option<PathBuf>,
    /// Also listen on this TCP address (signed mode; dev mode on loopback only; never in headers mode).
    #[arg(long, env = "HERO_DEPLOYER_ADMIN_LISTEN")]
    listen: Option<SocketAddr>,
    /// Do not serve the unix socket (e.g. a second dev instance on TCP only).
    #[arg(long)]
    no_socket: bool,
    /// How identity headers are trusted.
    #[arg(long, value_enum, default_value_t = Mode::Signed, env = "HERO_DEPLOYER_ADMIN_AUTH_MODE")]
    auth_mode: Mode,
    /// hero_proxy's assertion key: a JWKS file (`hero_proxy --print-key` or GET /.well-known/hero-proxy-key).
    #[arg(long, env = "HERO_DEPLOYER_ADMIN_PROXY_KEY")]
    proxy_key: Option<PathBuf>,
    /// The id of the hero_proxy route in front of the dashboard: assertions made for any other route are refused.
    #[arg(long, default_value = "admin", env = "HERO_DEPLOYER_ADMIN_AUDIENCE")]
    audience: String,
    /// In dev mode, the identity used when a request carries no `X-Hero-User`.
    #[arg(long, default_value = "dev-admin")]
    dev_user: String,
    /// Secret store holding `deployer/ADMIN_FORGE_USERS` (the deployer server's store).
    #[arg(long, value_enum, default_value_t = SecretsBackend::File)]
    secrets_backend: SecretsBackend,
    /// Directory of the file secret store. Default `<data_dir>/secrets` of the deployer,
    /// i.e. ~/hero/var/hero_os_tfgrid_deployer/secrets.
    #[arg(long, env = "HERO_DEPLOYER_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// The deployer's data dir, to find the default secrets dir.
    #[arg(long, env = "HERO_DEPLOYER_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let socket_dir = args
        .socket_dir
        .clone()
        .unwrap_or_else(|| home().join("hero/var/sockets"));
    let server = match &args.server {
        Some(s) => Endpoint::from_arg(s).map_err(|e| anyhow::anyhow!("--server: {e}"))?,
        None => Endpoint::Unix(socket_dir.join(SERVICE).join("rpc.sock")),
    };
    let auth = match args.auth_mode {
        Mode::Signed => {
            let Some(path) = &args.proxy_key else {
                bail!("--auth-mode signed needs --proxy-key <JWKS file> (hero_proxy's key); for local use pass --auth-mode dev");
            };
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the proxy key {}", path.display()))?;
            AuthMode::Signed(
                AssertionVerifier::from_jwks_json(&text, &args.audience)
                    .context("invalid proxy key or audience")?,
            )
        }
        Mode::Headers => AuthMode::Headers,
        Mode::Dev => AuthMode::Dev {
            user: args.dev_user.clone(),
        },
    };
    if let Some(addr) = args.listen {
        // Headers mode trusts plain identity headers: only a socket nothing but the proxy can reach makes that
        // safe, and every local process (and a DNS-rebound web page) can reach a loopback TCP port.
        if matches!(auth, AuthMode::Headers) {
            bail!(
                "--auth-mode headers serves only the unix socket (anything on this machine can reach {addr}); use --auth-mode signed for TCP"
            );
        }
        if !matches!(auth, AuthMode::Signed(_)) && !addr.ip().is_loopback() {
            bail!(
                "--auth-mode {} only listens on loopback; {addr} is not (use --auth-mode signed)",
                auth.name()
            );
        }
    }
    if auth.is_dev() {
        tracing::warn!(
            "DEVELOPMENT auth mode: identity is not verified; loopback and the local socket only"
        );
    }
    let secrets: Arc<dyn SecretStore> = match args.secrets_backend {
        SecretsBackend::File => {
            let dir = args.secrets_dir.clone().unwrap_or_else(|| {
                args.data_dir
                    .clone()
                    .unwrap_or_else(|| home().join("hero/var").join(SERVICE))
                    .join("secrets")
            });
            if !dir.join("master.key").exists() {
                bail!(
                    "no secret store at {} (start the deployer server first, or pass --secrets-dir)",
                    dir.display()
                );
            }
            Arc::new(
                FileSecretStore::open(&dir)
                    .with_context(|| format!("cannot open the secret store {}", dir.display()))?,
            )
        }
        SecretsBackend::HeroProc => Arc::new(HeroProcSecretStore::new(
            HeroProcSecretStore::default_socket(&socket_dir),
        )),
    };
    let state = AppState::new(Client::new(server.clone()), auth, secrets);
    let app = router(state);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let unix = if args.no_socket {
            None
        } else {
            let path = admin_socket(&socket_dir);
            let l = bind_unix(&path).await?;
            tracing::info!(socket = %path.display(), "listening");
            Some(l)
        };
        let tcp = match args.listen {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let bound = l.local_addr()?;
                tracing::info!(%bound, "listening");
                // One line on stdout so scripts and tests can read the bound port.
                println!("listening on http://{bound}");
                Some(l)
            }
            None => None,
        };
        if unix.is_none() && tcp.is_none() {
            bail!("nothing to listen on: --no-socket without --listen");
        }
        tracing::info!(server = %server, "using the deployer server");
        hero_os_tfgrid_deployer_admin::serve::run(app, unix, tcp, shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
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
