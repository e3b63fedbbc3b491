//! `hero_cockpit_standin --listen 127.0.0.1:0 --proxy-jwks-file key.jwks --forge-url URL
//! --request-log requests.jsonl [--secrets-dir DIR]`: prints `listening on http://<addr>` once
//! bound. `--dev-unsigned-loopback` trusts plain headers from loopback peers (development only).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use hero_cockpit_standin::{app, Cockpit, CockpitConfig};
use hero_identity::{AssertionVerifier, IdentityVerifier};

#[derive(Parser)]
#[command(about = "Stand-in for the Hero OS cockpit: a reference backend behind hero_proxy")]
struct Args {
    /// Address to bind (loopback: only hero_proxy should reach it).
    #[arg(long, env = "HERO_COCKPIT_LISTEN", default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// The proxy's verification key (JWKS, from `hero_proxy --print-key` or `/.well-known/hero-proxy-key`).
    #[arg(
        long,
        env = "HERO_COCKPIT_PROXY_JWKS_FILE",
        required_unless_present = "dev_unsigned_loopback"
    )]
    proxy_jwks_file: Option<PathBuf>,
    /// The audience this cockpit accepts: the id of the hero_proxy route in front of it. An
    /// assertion the proxy made for another route (another backend) is refused.
    #[arg(long, env = "HERO_COCKPIT_AUDIENCE", default_value = "cockpit")]
    audience: String,
    /// DEVELOPMENT ONLY: trust unsigned identity headers from loopback peers.
    #[arg(long)]
    dev_unsigned_loopback: bool,
    /// Forge base URL; default: the issuer the machine's SSO edge uses
    /// (`cockpit/FORGE_OAUTH_ISSUER` in `--secrets-dir`), so the two cannot disagree.
    #[arg(long, env = "HERO_COCKPIT_FORGE_URL")]
    forge_url: Option<String>,
    /// The request log (JSON lines).
    #[arg(long, env = "HERO_COCKPIT_REQUEST_LOG")]
    request_log: PathBuf,
    /// Secret store holding `cockpit/USER_FORGE_TOKEN` (optional fallback token).
    #[arg(long, env = "HERO_COCKPIT_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERO_COCKPIT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let verifier = match (&args.proxy_jwks_file, args.dev_unsigned_loopback) {
        (Some(path), false) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the proxy key {}", path.display()))?;
            IdentityVerifier::Signed(
                AssertionVerifier::from_jwks_json(&text, &args.audience).with_context(|| {
                    format!("the proxy key {} is not a valid JWKS", path.display())
                })?,
            )
        }
        (None, true) => IdentityVerifier::DevUnsignedLoopback,
        _ => anyhow::bail!("give exactly one of --proxy-jwks-file and --dev-unsigned-loopback"),
    };
    let secrets: Option<Arc<dyn hero_secrets::SecretStore>> = match &args.secrets_dir {
        Some(d) => Some(Arc::new(
            hero_secrets::FileSecretStore::open(d)
                .with_context(|| format!("opening the secret store {}", d.display()))?,
        )),
        None => None,
    };
    let forge_url = match (args.forge_url, &secrets) {
        (Some(url), _) => url,
        (None, Some(store)) => store
            .get(hero_secrets::slots::COCKPIT_OAUTH_ISSUER)
            .await
            .context("reading the Forge issuer from the secret store")?
            .map(|v| v.expose().trim().to_owned())
            .filter(|v| !v.is_empty())
            .with_context(|| {
                format!(
                    "no --forge-url and no {} in the secret store",
                    hero_secrets::slots::COCKPIT_OAUTH_ISSUER
                )
            })?,
        (None, None) => anyhow::bail!("give --forge-url or --secrets-dir"),
    };
    let cockpit = Cockpit::new(CockpitConfig {
        verifier,
        forge_url,
        secrets,
        request_log: args.request_log,
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app(cockpit).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
