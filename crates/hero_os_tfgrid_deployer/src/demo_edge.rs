//! The demo's operator side in the production shape: the admin dashboard behind this workspace's
//! own `hero_proxy` (Forge OAuth2 + PKCE, the admin allowlist, signed assertions the dashboard
//! verifies), and an operator account on the dev Forge to sign in with.
//!
//! Why not the dashboard's dev sign-in: a newcomer would then only ever see the shape nobody runs in
//! production. Dev sign-in stays behind `demo --dev-sign-in`.
//!
//! Everything secret stays in 0600 files of the demo directory or in the edge's encrypted store:
//! the operator's password (made here, kept across runs, set on the dev Forge from its file), the
//! dashboard's OAuth client (registered offline with `hero_devforge add-oauth-app`, its secret
//! written by Forge to a 0600 file), and the edge's slots (written through the store's API).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use hero_secrets::{slots, FileSecretStore, SecretStore};
use rand::distributions::{Alphanumeric, DistString};

use crate::cmd_demo::{spawn_logged, wait_for, ChildGuard};
use crate::cmd_server::sibling;

/// The operator's Forge login on the dev Forge.
pub const OPERATOR: &str = "hero-operator";

/// The hero_proxy route in front of the dashboard; the dashboard's `--audience`.
const ROUTE: &str = "admin";

/// The operator's dev Forge account: its login and password (from `operator.password`, 0600).
pub struct Operator {
    pub username: String,
    pub password: zeroize::Zeroizing<String>,
}

/// Makes (or reuses) the operator on the dev Forge, before Forge serves. The password is written to
/// its file first and set from it, so a run that dies in between still knows the password Forge holds.
pub fn ensure_operator(dir: &Path) -> anyhow::Result<Operator> {
    let file = dir.join("operator.password");
    if !file.exists() {
        let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 24);
        write_private(&file, password.as_bytes())?;
    }
    let password = zeroize::Zeroizing::new(
        std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .trim()
            .to_owned(),
    );
    devforge(
        dir,
        &[
            "seed-admin",
            "--username",
            OPERATOR,
            "--password-file",
            &file.display().to_string(),
            "--token-out",
            &dir.join("operator.token").display().to_string(),
        ],
    )?;
    Ok(Operator {
        username: OPERATOR.to_owned(),
        password,
    })
}

/// The dashboard's OAuth client on the dev Forge, registered once per dashboard origin.
fn ensure_app(dir: &Path, origin: &str, port: u16) -> anyhow::Result<(String, String)> {
    let file = dir.join(format!("edge/dashboard-app-{port}.json"));
    if !file.exists() {
        devforge(
            dir,
            &[
                "add-oauth-app",
                "--name",
                &format!("hero_os_tfgrid_deployer demo dashboard ({origin})"),
                "--redirect-uri",
                &format!("{origin}/oauth/callback"),
                "--confidential",
                "--secret-out",
                &file.display().to_string(),
            ],
        )?;
    }
    let creds: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
        .with_context(|| {
            format!(
                "{} is not the app file hero_devforge writes",
                file.display()
            )
        })?;
    let field = |k: &str| {
        creds[k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{} has no {k}", file.display()))
    };
    Ok((field("client_id")?, field("client_secret")?))
}

/// A running dashboard behind its SSO edge.
pub struct DashboardEdge {
    pub url: String,
    _proxy: ChildGuard,
    _dashboard: ChildGuard,
}

/// Starts the dashboard (signed assertions only, its unix socket) and hero_proxy on
/// `127.0.0.1:<port>` in front of it; returns once the edge accepts connections.
pub async fn start(
    dir: &Path,
    server_socket: &Path,
    forge_url: &str,
    port: u16,
    operator: &Operator,
) -> anyhow::Result<DashboardEdge> {
    let edge = dir.join("edge");
    create_private_dir(&edge)?;
    let origin = format!("http://127.0.0.1:{port}");
    let (client_id, client_secret) = ensure_app(dir, &origin, port)?;

    // The edge's store: its OAuth client, the issuer (the dev Forge's port changes per run) and who is admin.
    let store = FileSecretStore::open(&edge.join("secrets"))?;
    for (slot, value) in [
        (slots::COCKPIT_OAUTH_ISSUER, forge_url),
        (slots::COCKPIT_OAUTH_CLIENT_ID, client_id.as_str()),
        (slots::COCKPIT_OAUTH_CLIENT_SECRET, client_secret.as_str()),
        (slots::ADMIN_FORGE_USERS, operator.username.as_str()),
    ] {
        store
            .set(slot, value)
            .await
            .with_context(|| format!("cannot write {slot} into the edge's store"))?;
    }

    let sock_dir = dir.join("sock");
    let dashboard_socket = sock_dir.join("hero_os_tfgrid_deployer/admin.sock");
    let config = edge.join("hero_proxy.toml");
    std::fs::write(
        &config,
        format!(
            "# Written by `demo`: the dashboard's SSO edge.\n\
             listen = {listen}\npublic_scheme = \"http\"\npublic_url = {origin}\n\
             state_dir = {state}\nsecrets_dir = {secrets}\nsocket_dir = {sockets}\nworkers = 1\n\n\
             [[routes]]\nid = \"{ROUTE}\"\npath = \"/\"\nupstream = {upstream}\npolicy = \"admin\"\n",
            listen = toml_str(&format!("127.0.0.1:{port}")),
            origin = toml_str(&origin),
            state = toml_path(&edge),
            secrets = toml_path(&edge.join("secrets")),
            sockets = toml_path(&edge.join("sock")),
            upstream = toml_str(&format!("unix:{}", dashboard_socket.display())),
        ),
    )?;
    let proxy_bin = sibling("hero_proxy")?;
    let key = Command::new(&proxy_bin)
        .arg("--config")
        .arg(&config)
        .arg("--print-key")
        .stdin(Stdio::null())
        .output()
        .context("cannot run hero_proxy --print-key")?;
    anyhow::ensure!(
        key.status.success(),
        "hero_proxy --print-key failed: {}",
        String::from_utf8_lossy(&key.stderr).trim()
    );
    let jwks = edge.join("key.jwks");
    std::fs::write(&jwks, &key.stdout)?;

    let admin_log = dir.join("admin.log");
    let dashboard = spawn_logged(
        Command::new(sibling("hero_os_tfgrid_deployer_admin")?)
            .args(["--auth-mode", "signed", "--audience", ROUTE, "--proxy-key"])
            .arg(&jwks)
            .arg("--server")
            .arg(format!("unix:{}", server_socket.display()))
            .arg("--socket-dir")
            .arg(&sock_dir)
            .arg("--secrets-dir")
            .arg(dir.join("data/secrets")),
        &admin_log,
    )
    .context("cannot start hero_os_tfgrid_deployer_admin")?;
    let mut dashboard = ChildGuard(dashboard);
    let probe = dashboard_socket.clone();
    wait_for("the dashboard", &mut dashboard, &admin_log, || {
        let p = probe.clone();
        async move { tokio::net::UnixStream::connect(p).await.is_ok() }
    })
    .await?;

    let proxy_log = dir.join("edge.log");
    let mut proxy = ChildGuard(
        spawn_logged(
            Command::new(&proxy_bin).arg("--config").arg(&config),
            &proxy_log,
        )
        .context("cannot start the dashboard's hero_proxy")?,
    );
    wait_for(
        "the dashboard's hero_proxy",
        &mut proxy,
        &proxy_log,
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await?;
    Ok(DashboardEdge {
        url: format!("{origin}/"),
        _proxy: proxy,
        _dashboard: dashboard,
    })
}

/// Runs `hero_devforge <args> --data-dir <dir>/forge` to completion.
fn devforge(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(sibling("hero_devforge")?)
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("forge"))
        .stdin(Stdio::null())
        .output()
        .context("cannot run hero_devforge")?;
    anyhow::ensure!(
        out.status.success(),
        "hero_devforge {} failed: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn toml_path(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

fn create_private_dir(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("cannot create {}", p.display()))
}

fn write_private(p: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
