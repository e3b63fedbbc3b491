//! The real `hero_proxy` binary: config file + env overlay, encrypted file secret store seeded like production,
//! a sign-in through the oidc-provider peer; then its log and its sqlite database are searched for the token
//! values, the client secret and the session id, and none may appear.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;

use common::*;
use hero_secrets::{FileSecretStore, SecretStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_signs_in_and_never_writes_secrets_to_log_or_db() {
    // Held until the proxy listens on it too (see `reserve_port`).
    let (port, reserved) = reserve_port();
    let base = format!("http://localhost:{port}");
    let peer = Peer::start(&[format!("{base}/oauth/callback")]).await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let secrets_dir = dir.path().join("secrets");
    let secrets = FileSecretStore::open(&secrets_dir).unwrap();
    secrets
        .set("cockpit/FORGE_OAUTH_CLIENT_ID", CLIENT_ID)
        .await
        .unwrap();
    secrets
        .set("cockpit/FORGE_OAUTH_CLIENT_SECRET", CLIENT_SECRET)
        .await
        .unwrap();
    secrets
        .set("cockpit/FORGE_OAUTH_ISSUER", &peer.issuer)
        .await
        .unwrap();
    let cfg = dir.path().join("hero_proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "public_scheme = \"http\"\npublic_url = \"{base}\"\nstate_dir = \"{}\"\nsocket_dir = \"{}\"\n[[routes]]\npath = \"/\"\nupstream = \"http://{}\"\npass_token = true\n",
            state.display(),
            dir.path().join("sockets").display(),
            echo.addr
        ),
    )
    .unwrap();
    let log_path = dir.path().join("proxy.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hero_proxy"))
        .arg("--config")
        .arg(&cfg)
        .env("HERO_PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env("HERO_PROXY_SECRETS_DIR", &secrets_dir)
        .env("HERO_PROXY_LOG", "debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _guard = ProcGuard(child);
    let log_for_failure = log_path.clone();
    let waited = tokio::spawn(async move { wait_listening(port).await });
    if waited.await.is_err() {
        panic!(
            "proxy did not start: {}",
            std::fs::read_to_string(&log_for_failure).unwrap_or_default()
        );
    }
    drop(reserved);

    let cookie = login_at(&base, &peer.issuer, "alice").await;
    let seen = seen_at(&base, "/x", &cookie).await;
    assert_eq!(seen.one("x-hero-user"), Some("alice"));

    let slot = |k| hero_proxy::vault::token_slot("forge", "1001", k);
    let access = secrets.get(&slot("access_token")).await.unwrap().unwrap();
    let refresh = secrets.get(&slot("refresh_token")).await.unwrap().unwrap();
    assert_eq!(seen.one("x-hero-forge-token"), Some(access.expose()));
    let session_id = cookie.trim_start_matches("__Host-hero_session=").to_owned();

    // `--print-key` prints the key the running proxy publishes, without binding anything.
    let published: serde_json::Value = reqwest::get(format!("{base}/.well-known/hero-proxy-key"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let printed = tokio::process::Command::new(env!("CARGO_BIN_EXE_hero_proxy"))
        .arg("--config")
        .arg(&cfg)
        .arg("--print-key")
        .env("HERO_PROXY_SECRETS_DIR", &secrets_dir)
        .env("HERO_PROXY_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(printed.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed, published);
    assert_eq!(
        Harness::client()
            .get(format!("{base}/x"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A callback carrying an `error` of the caller's choosing (anyone can start a sign-in of their own to get a
    // valid state): whatever its spelling, nothing of it reaches the log but a bare RFC 6749 code. Before, the
    // text went in verbatim, line breaks and all, so a forged entry could follow.
    for hostile in [
        "access_denied%0A2026-01-01T00:00:00Z%20INFO%20hero_proxy:%20forged-entry",
        "x%0D%0Aforged-entry",
        "%1B%5B2Jforged-entry",
        "forged-entry",
    ] {
        let (authorize, login_cookie) = begin_login(&base, "/", "alice").await;
        let state = query(&authorize)["state"].clone();
        let r = Harness::client()
            .get(format!(
                "{base}/oauth/callback?state={state}&error={hostile}"
            ))
            .header("cookie", &login_cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{hostile}");
    }

    let mut haystack = std::fs::read(&log_path).unwrap();
    for entry in std::fs::read_dir(&state).unwrap() {
        haystack.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let text = String::from_utf8_lossy(&haystack);
    assert!(text.contains("signed in"), "the log is being written");
    assert!(
        text.contains("provider returned an error") && !text.contains("forged-entry"),
        "{text}"
    );
    for (what, secret) in [
        ("access token", access.expose()),
        ("refresh token", refresh.expose()),
        ("client secret", CLIENT_SECRET),
        ("session id", session_id.as_str()),
    ] {
        assert!(
            !text.contains(secret),
            "{what} found in the proxy's log or database"
        );
    }
}

/// `hero_proxy secret set SLOT` stores stdin (one trailing newline dropped) in the encrypted store
/// and never echoes the value; an empty stdin is refused and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_set_reads_the_value_from_stdin_only() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("secrets");
    let run = |slot: &str, stdin: &[u8]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hero_proxy"))
            .args(["secret", "set", slot, "--secrets-dir"])
            .arg(&store_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let value = "s3cr3t-client-value";
    let out = run(
        "cockpit/FORGE_OAUTH_CLIENT_SECRET",
        format!("{value}\n").as_bytes(),
    );
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("stored cockpit/FORGE_OAUTH_CLIENT_SECRET"));
    assert!(!printed.contains(value), "the value was echoed: {printed}");
    let store = FileSecretStore::open(&store_dir).unwrap();
    let got = store
        .get("cockpit/FORGE_OAUTH_CLIENT_SECRET")
        .await
        .unwrap();
    assert_eq!(got.unwrap().expose(), value);

    for (slot, stdin) in [
        ("cockpit/FORGE_OWNER", &b""[..]),
        ("cockpit/FORGE_OWNER", b"\n"),
    ] {
        let out = run(slot, stdin);
        assert!(!out.status.success(), "empty value accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("empty value"));
    }
    assert!(store.get("cockpit/FORGE_OWNER").await.unwrap().is_none());
    let out = run("../escape", b"x");
    assert!(!out.status.success(), "a bad slot name was accepted");
}
