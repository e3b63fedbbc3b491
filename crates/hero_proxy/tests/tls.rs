//! TLS termination by the proxy itself: a self-signed certificate generated at test time (Debian `openssl`), an
//! HTTPS request through a public route to the echo upstream, plain HTTP refused on the TLS port, and clear startup
//! errors for a missing key file or only one of the two paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use hero_proxy::{Config, ManualClock};
use hero_secrets::MemorySecretStore;

/// Writes `cert.pem` and `key.pem` (self-signed, SAN localhost + 127.0.0.1) into `dir`.
async fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = tokio::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .kill_on_drop(true)
        .output()
        .await
        .expect("openssl (Debian package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn config(dir: &Path, echo: &Echo, tls: &str) -> Config {
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
workers = 2
state_dir = "{state}"
socket_dir = "{state}/sockets"
public_url = "https://localhost"
{tls}
[[routes]]
path = "/public"
upstream = "http://{up}"
policy = "public"
"#,
        state = dir.display(),
        up = echo.addr,
    );
    Config::from_toml_with_env(&toml, Vec::new()).unwrap()
}

async fn start(cfg: Config) -> hero_proxy::Result<hero_proxy::Running> {
    hero_proxy::start(
        cfg,
        Arc::new(MemorySecretStore::new()),
        Arc::new(ManualClock::new(unix_now())),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_public_route_and_plain_http_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path()).await;
    let echo = Echo::start().await;
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let proxy = start(config(dir.path(), &echo, &tls)).await.unwrap();
    let port = proxy.addr.port();

    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .http1_only()
        .build()
        .unwrap();
    // Several requests, so connections land on both SO_REUSEPORT workers.
    for i in 0..6 {
        let r = client
            .get(format!("https://localhost:{port}/public/x{i}"))
            .header("x-hero-user", "mallory")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["path"], format!("/public/x{i}"));
        let seen = Seen(serde_json::from_value(v["headers"].clone()).unwrap());
        assert_eq!(seen.one("x-hero-user"), None);
    }

    // A client that does not trust the self-signed certificate is refused by its own verification.
    assert!(reqwest::get(format!("https://localhost:{port}/public"))
        .await
        .is_err());
    // Plain HTTP on the TLS port never gets an HTTP response.
    let plain = reqwest::Client::new()
        .get(format!("http://localhost:{port}/public"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_are_clear_startup_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path()).await;
    let echo = Echo::start().await;

    let missing = dir.path().join("nope.key");
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        missing.display()
    );
    let Err(e) = start(config(dir.path(), &echo, &tls)).await else {
        panic!("started with a missing key file");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("tls_key") && msg.contains(&missing.display().to_string()),
        "{msg}"
    );

    let only_cert = format!("tls_cert = \"{}\"", cert.display());
    let Err(e) = start(config(dir.path(), &echo, &only_cert)).await else {
        panic!("started with tls_cert only");
    };
    assert!(e.to_string().contains("tls_key is not"), "{e}");

    // A key file that holds a certificate, not a key.
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        cert.display()
    );
    let Err(e) = start(config(dir.path(), &echo, &tls)).await else {
        panic!("started with a certificate as key");
    };
    assert!(e.to_string().contains("tls_key"), "{e}");

    // Env overlay sets the pair too.
    let env = vec![
        (
            "HERO_PROXY_TLS_CERT".to_string(),
            cert.display().to_string(),
        ),
        ("HERO_PROXY_TLS_KEY".to_string(), key.display().to_string()),
    ];
    let c = Config::from_toml_with_env("public_url = \"https://localhost\"", env).unwrap();
    assert_eq!(c.tls_cert.as_deref(), Some(cert.as_path()));
    assert_eq!(c.tls_key.as_deref(), Some(key.as_path()));
}
