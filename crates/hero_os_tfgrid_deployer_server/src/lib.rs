//! The deployer server: core ([`service::Deployer`], [`users`]), its ports ([`forge`], secrets via
//! `hero_secrets`, [`clock`]), state ([`db`], [`audit`]) and the thin transport ([`rpc`], [`http`]).
//! See ARCHITECTURE.md for the map and the invariants.

pub mod audit;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod fleet;
pub mod forge;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod password_reset;
pub mod private_fs;
pub mod provision;
pub mod rpc;
pub mod service;
pub mod users;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hero_secrets::{FileSecretStore, HeroProcSecretStore, SecretStore};

use crate::clock::{Clock, OsRandom, Random, SystemClock};
use crate::config::{Config, SecretsBackend};
use crate::db::{DataDirLock, Db};
use crate::forge::http::{AdminTokenSource, HttpForge, RetryPolicy};
use crate::forge::ForgeApi;
use crate::rpc::handlers::{register_all, ServerFacts};
use crate::rpc::Registry;
use crate::service::{CoreSettings, Deployer};

/// Requests the TCP listener serves at once; more wait for a turn (see where it is applied).
const TCP_IN_FLIGHT: usize = 64;

/// Why the server could not start. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Prerequisite(String),
    #[error("{0}")]
    DataDir(String),
    #[error("{0}")]
    Lock(String),
    #[error("{0}")]
    Db(#[from] db::DbError),
    #[error("secret store: {0}")]
    Secrets(#[from] hero_secrets::SecretError),
    #[error("Forge client: {0}")]
    Forge(#[from] forge::ForgeError),
    #[error("{0}")]
    Listen(String),
    #[error("provisioning: {0}")]
    Provision(String),
}

/// The OpenRPC document of this build.
pub fn openrpc_document() -> serde_json::Value {
    hero_os_tfgrid_deployer_sdk::openrpc::document(env!("CARGO_PKG_VERSION"))
}

/// The method registry wired to `deployer`.
pub fn registry(deployer: Deployer, facts: ServerFacts) -> Registry {
    let mut registry = Registry::new(openrpc_document());
    register_all(&mut registry, deployer, facts);
    registry
}

/// Opens the configured secret store.
pub fn open_secret_store(config: &Config) -> Result<Arc<dyn SecretStore>, StartError> {
    Ok(match config.secrets.backend {
        SecretsBackend::File => Arc::new(FileSecretStore::open(&config.secrets_dir())?),
        SecretsBackend::HeroProc => Arc::new(HeroProcSecretStore::new(config.hero_proc_socket())),
    })
}

/// Runs the server until `shutdown` resolves. Holds the data-dir lock for its whole life.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    config
        .check_prerequisites()
        .map_err(|e| StartError::Prerequisite(e.to_string()))?;
    private_fs::restrict_umask();
    private_fs::private_dir(&config.data_dir, 0o700, "data dir").map_err(StartError::DataDir)?;
    let _lock = DataDirLock::acquire(&config.data_dir).map_err(StartError::Lock)?;
    let db = Db::open(&config.database_path())?;
    // Files of an earlier run under a looser umask (sqlite gives -wal/-shm the database's mode).
    let db_path = config.database_path();
    for file in [
        db_path.clone(),
        db_path.with_extension("db-wal"),
        db_path.with_extension("db-shm"),
        config.data_dir.join("server.lock"),
    ] {
        private_fs::private_file(&file, "database file").map_err(StartError::DataDir)?;
    }
    if config.secrets.backend == SecretsBackend::File {
        private_fs::private_dir(&config.secrets_dir(), 0o700, "secret store")
            .map_err(StartError::DataDir)?;
    }
    let secrets = open_secret_store(&config)?;
    let random: Arc<dyn Random> = Arc::new(OsRandom);
    let clock: Arc<dyn Clock> =
        fleet::expiry::server_clock(Arc::new(SystemClock), &config.provision);
    let admin_token = match &config.forge.admin_token_file {
        Some(path) => AdminTokenSource::File(path.clone()),
        None => AdminTokenSource::Slot(secrets.clone()),
    };
    // Counters fed where things happen (Forge errors here; steps and backends by the
    // provisioner), exported with the database's state at `GET /metrics`.
    let metrics = Arc::new(metrics::Metrics::new());
    let http_forge: Arc<dyn ForgeApi> = Arc::new(HttpForge::new(
        &config.forge.url,
        Duration::from_secs(config.forge.timeout_secs),
        admin_token,
        RetryPolicy {
            attempts: config.forge.attempts,
            ..RetryPolicy::default()
        },
        random.clone(),
    )?);
    let forge = forge::metered::MeteredForge::wrap(http_forge, metrics.clone());
    let deployer = Deployer {
        db,
        secrets,
        forge: forge.clone(),
        clock: clock.clone(),
        random,
        settings: Arc::new(CoreSettings {
            email_domain: config.forge.email_domain.clone(),
            user_token_scopes: config.forge.user_token_scopes.clone(),
        }),
    };

    // Forge's version is informative: ask once, without delaying start-up.
    let forge_version = Arc::new(tokio::sync::OnceCell::new());
    {
        let forge = forge.clone();
        let cell = forge_version.clone();
        tokio::spawn(async move {
            match forge.version().await {
                Ok(v) => {
                    tracing::info!(forge = forge.url(), version = %v, "Forge answered");
                    let _ = cell.set(v);
                }
                Err(e) => {
                    tracing::warn!(forge = forge.url(), error = %e, "Forge version check failed")
                }
            }
        });
    }
    let facts = ServerFacts {
        forge_version: None,
        data_dir: config.data_dir.display().to_string(),
        started_at: clock.now(),
        profiles: config
            .provision
            .manifest_profiles()
            .profiles
            .into_keys()
            .collect(),
        default_profile: config.provision.default_profile.clone(),
    };
    let provisioner = provision::wiring::build(&config, deployer.clone(), metrics.clone())
        .await
        .map_err(StartError::Provision)?;
    let reaper = provisioner
        .start()
        .await
        .map_err(|e| StartError::Provision(e.to_string()))?;
    let health = Arc::new(fleet::health::HealthWatch::new(
        deployer.db.clone(),
        provisioner.agent(),
        clock.clone(),
        deployer.random.clone(),
        config.health.clone(),
        config.provision.health_path.clone(),
    ));
    let health_task = health.clone().spawn();
    // After the jobs of an earlier run resumed: expired VMs are caught up now.
    let expiry_task = fleet::expiry::spawn(provisioner.clone());
    let access_task = fleet::access::spawn(provisioner.clone());
    let deployer_db = deployer.db.clone();
    let mut registry = registry_with_version(deployer, facts, forge_version);
    provision::rpc::register(&mut registry, provisioner.clone());
    fleet::rpc::register(&mut registry, provisioner.clone(), health);
    let doc = openrpc_document();

    // TCP first: once the unix socket answers, every listener is ready.
    let tcp = match config.tcp_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| StartError::Listen(format!("cannot bind TCP {addr}: {e}")))?,
        ),
        None => None,
    };
    let socket_path = config.rpc_socket();
    let unix = listen::bind_unix(&socket_path, config.socket_mode)
        .await
        .map_err(StartError::Listen)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    {
        let app = http::router(registry.clone(), &doc, true, config.max_body_bytes)
            .merge(metrics.clone().router(deployer_db.clone()));
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        }));
    }
    if let Some(tcp) = tcp {
        let addr = tcp
            .local_addr()
            .map_err(|e| StartError::Listen(e.to_string()))?;
        // At most TCP_IN_FLIGHT requests served at once, the rest wait for a turn: TCP is reachable by more
        // than the operator, and nothing else bounded how many answers (or long-polls) it held together.
        let app = http::router(registry, &doc, false, config.max_body_bytes)
            .merge(metrics.clone().router(deployer_db.clone()))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                TCP_IN_FLIGHT,
            ));
        let mut rx = stop_rx.clone();
        tracing::info!(%addr, "listening on TCP (expected behind the SSO edge)");
        tasks.push(tokio::spawn(async move {
            axum::serve(tcp, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        }));
    }
    tracing::info!(
        socket = %socket_path.display(),
        data_dir = %config.data_dir.display(),
        forge = %config.forge.url,
        forge_is_default = config.forge.url == config::DEFAULT_FORGE_URL,
        "deployer server ready"
    );
    shutdown.await;
    tracing::info!("shutting down");
    reaper.abort();
    if let Some(task) = health_task {
        task.abort();
    }
    expiry_task.abort();
    access_task.abort();
    provisioner.shutdown();
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}

/// The registry, with `server_info` reading the Forge version once it is known.
fn registry_with_version(
    deployer: Deployer,
    facts: ServerFacts,
    version: Arc<tokio::sync::OnceCell<String>>,
) -> Registry {
    use hero_os_tfgrid_deployer_sdk::methods::GetServerInfo;
    let mut registry = registry(deployer.clone(), facts.clone());
    registry.register::<GetServerInfo, _, _>(move |_, _| {
        let d = deployer.clone();
        let mut facts = facts.clone();
        let version = version.clone();
        async move {
            facts.forge_version = version.get().cloned();
            rpc::handlers::server_info(&d, &facts).await
        }
    });
    registry
}
