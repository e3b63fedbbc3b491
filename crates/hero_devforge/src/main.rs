//! `hero_devforge`: a named stand-in for Forgejo (forge.ourworld.tf) for the quickstart and tests.
//! Secrets never go through argv, stdout or stderr: they are read from and written to files.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand};
use hero_devforge::{cli, AppState, Config};

#[derive(Parser, Debug)]
#[command(
    name = "hero_devforge",
    version,
    about = "Forgejo-compatible development server (a stand-in for Forgejo): REST subset + OAuth2/OIDC provider"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the API. Prints exactly one line on stdout, `listening on http://ADDR`, once ready.
    Serve {
        /// Address to bind; port 0 lets the OS pick (read it back from the stdout line).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// Directory holding devforge.db and the JWT signing key.
        #[arg(long)]
        data_dir: PathBuf,
        /// External base URL (default: http://<bound address>); used for the OIDC issuer and links.
        #[arg(long)]
        external_url: Option<String>,
        /// Publish the OIDC issuer with a trailing slash, like Forgejo ≤ v11 (v12: false).
        #[arg(long, default_value_t = true, action = ArgAction::Set)]
        issuer_trailing_slash: bool,
        /// Lifetime of OAuth access tokens and id_tokens in seconds.
        #[arg(long, default_value_t = 3600)]
        access_token_ttl: i64,
    },
    /// Create (or reuse) a site admin and write a fresh `all`-scope token to --token-out (0600).
    SeedAdmin {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        username: String,
        /// File the new admin token is written to (mode 0600).
        #[arg(long)]
        token_out: PathBuf,
        /// File holding the admin's password (first line). Without it a new admin gets a random,
        /// unknown password (token-only).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Add a user to an org (`org`) or a team (`org:team`), for the OIDC `groups` claim.
    AddMember {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long)]
        group: String,
    },
    /// Register an instance-wide OAuth2 application; writes {"client_id","client_secret"} to --secret-out (0600).
    AddOauthApp {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// Allowed redirect URI (repeatable).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// A confidential client (has a secret; consent asked once). Default: public client (PKCE required).
        #[arg(long)]
        confidential: bool,
        #[arg(long)]
        secret_out: PathBuf,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    match args.cmd {
        Cmd::Serve {
            listen,
            data_dir,
            external_url,
            issuer_trailing_slash,
            access_token_ttl,
        } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot bind {listen}"))?;
            let addr = listener.local_addr()?;
            let base = external_url.unwrap_or_else(|| format!("http://{addr}"));
            let mut config = Config::new(&base);
            config.issuer_trailing_slash = issuer_trailing_slash;
            config.access_token_ttl = access_token_ttl;
            let dir = data_dir.clone();
            let state = tokio::task::spawn_blocking(move || AppState::open(&dir, config))
                .await?
                .with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
            state.warm_up_keys();
            tracing::info!(db = %state.db.path().display(), external_url = %base, "devforge ready");
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "listening on http://{addr}")?;
                out.flush()?;
            }
            hero_devforge::run::serve(listener, state, shutdown_signal()).await?;
        }
        Cmd::SeedAdmin {
            data_dir,
            username,
            token_out,
            password_file,
        } => {
            let seeded =
                cli::seed_admin(&data_dir, &username, &token_out, password_file.as_deref())?;
            tracing::info!(
                admin = %seeded.username,
                created = seeded.created,
                token_name = %seeded.token_name,
                token_file = %token_out.display(),
                "admin token written"
            );
        }
        Cmd::AddMember {
            data_dir,
            username,
            group,
        } => {
            cli::add_member(&data_dir, &username, &group)?;
            tracing::info!(user = %username, group = %group, "membership added");
        }
        Cmd::AddOauthApp {
            data_dir,
            name,
            redirect_uris,
            confidential,
            secret_out,
        } => {
            let client_id =
                cli::add_oauth_app(&data_dir, &name, &redirect_uris, confidential, &secret_out)?;
            tracing::info!(app = %name, client_id = %client_id, file = %secret_out.display(), "oauth2 app registered");
        }
    }
    Ok(())
}
