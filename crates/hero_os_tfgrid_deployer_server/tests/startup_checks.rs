//! What the server refuses at start, with the reason, before it touches anything: a missing
//! bootstrap script or sshd, a relative data dir, a non-socket at the socket path. Real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::*;

/// Runs the server with `extra` on top of the usual test environment; returns its log once it
/// exited (it must: each case is refused).
fn refused(root: &std::path::Path, extra: Vec<(String, String)>) -> String {
    let opts = ServerOptions {
        forge_url: "http://127.0.0.1:9".into(),
        extra_env: extra,
    };
    let env = Server::env_for(root, &opts);
    let log = root.join("refused.log");
    let _ = std::fs::remove_file(&log);
    let mut guard = Server::spawn(root, &env, &log);
    let status = wait_exit(&mut guard.child, Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "the server started: {text}");
    text
}

#[test]
fn missing_prerequisites_are_refused_before_the_data_dir_exists() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    for (toml, needle) in [
        (
            "[provision]\nbootstrap_script = \"/nonexistent/setup-binaries.sh\"\n",
            "bootstrap_script /nonexistent/setup-binaries.sh",
        ),
        (
            "[provision.local]\nsshd_bin = \"/nonexistent/sshd\"\n",
            "sshd_bin /nonexistent/sshd",
        ),
    ] {
        std::fs::write(&config, toml).unwrap();
        let text = refused(
            dir.path(),
            vec![("HERO_DEPLOYER_CONFIG".into(), config.display().to_string())],
        );
        assert!(text.contains(needle), "{text}");
        assert!(
            !dir.path().join("data").exists(),
            "data dir made before the check"
        );
    }
}

#[test]
fn a_relative_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = refused(
        dir.path(),
        vec![("HERO_DEPLOYER_DATA_DIR".into(), "relative/data".into())],
    );
    assert!(text.contains("data_dir must be an absolute path"), "{text}");
}

#[test]
fn a_regular_file_at_the_socket_path_is_kept_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().join("sock/hero_os_tfgrid_deployer");
    std::fs::create_dir_all(&sock_dir).unwrap();
    let path = sock_dir.join("rpc.sock");
    std::fs::write(&path, b"someone's notes").unwrap();
    let text = refused(dir.path(), Vec::new());
    assert!(text.contains("is not a socket"), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone's notes");
}

#[test]
fn the_start_log_names_the_forge() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: "http://127.0.0.1:9".into(),
            extra_env: Vec::new(),
        },
    );
    // The line follows the bind, so it may land just after the socket first answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let log = server.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("deployer server ready")) {
            break line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no ready line: {log}");
        poll_pause();
    };
    assert!(
        ready.contains("forge=http://127.0.0.1:9") && ready.contains("forge_is_default=false"),
        "{ready}"
    );
    assert!(server.guard.terminate().success());
}
