//! Every file the server creates is 0600 and every directory 0700 (the socket as configured), on
//! a fresh start and over what an earlier run under a looser umask left behind. Real server,
//! real dev Forge; every entry is `stat`ed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use support::*;

/// Every entry under `dir` (and `dir` itself) with its mode, not following links.
fn modes_under(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = vec![(dir.to_path_buf(), std::fs::symlink_metadata(dir).unwrap())];
    let mut i = 0;
    while i < out.len() {
        if out[i].1.is_dir() {
            for e in std::fs::read_dir(&out[i].0).unwrap().flatten() {
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                out.push((e.path(), meta));
            }
        }
        i += 1;
    }
    out
}

fn assert_private(root: &Path, socket: &Path) {
    let data = root.join("data");
    let sock_dir = socket.parent().unwrap().to_path_buf();
    let mut seen = Vec::new();
    for (path, meta) in modes_under(&data).into_iter().chain(modes_under(&sock_dir)) {
        let mode = meta.permissions().mode() & 0o777;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        seen.push(name);
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {mode:o}: readable or writable by others",
            path.display()
        );
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
        } else if path == socket {
            assert_eq!(mode, 0o600, "{}", path.display());
        } else {
            assert!(mode <= 0o600, "{} is {mode:o}", path.display());
        }
    }
    for expected in [
        "state.db",
        "state.db-wal",
        "state.db-shm",
        "server.lock",
        "master.key",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} not among {seen:?}"
        );
    }
}

#[tokio::test]
async fn every_file_and_directory_the_server_creates_is_private() {
    let stack = Stack::start().await;
    let c = stack.client();
    c.create_user("mona", None, None).await.unwrap();
    assert_private(&stack.server.root, &stack.server.socket);
}

#[tokio::test]
async fn loose_modes_left_by_an_earlier_run_are_tightened() {
    let stack = Stack::start().await;
    stack
        .client()
        .create_user("nico", None, None)
        .await
        .unwrap();
    let mut server = stack.server;
    let status = server.guard.terminate();
    assert!(status.success(), "{status}");
    // What a run under umask 022 (or a hand-made mkdir) leaves: everything group/other readable,
    // but the secret key, which the store refuses to use when loose (hero_secrets tests that).
    let data = server.data_dir();
    let sock_dir = server.socket.parent().unwrap().to_path_buf();
    for (path, meta) in modes_under(&data).into_iter().chain(modes_under(&sock_dir)) {
        if path.ends_with("master.key") {
            continue;
        }
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // A -wal and -shm of the earlier run, as sqlite leaves them after a crash.
    for f in ["state.db-wal", "state.db-shm"] {
        if !data.join(f).exists() {
            std::fs::write(data.join(f), b"").unwrap();
            std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    server.guard = Server::spawn(&server.root, &server.env, &server.log);
    server.wait_ready();
    // The data dir is 0700 again, so nothing below it is reachable by others; the server's own
    // files are tightened too (the local backend's sandboxes are the sandboxes' business).
    for (path, want) in [
        (data.clone(), 0o700),
        (sock_dir.clone(), 0o700),
        (server.socket.clone(), 0o600),
        (data.join("secrets"), 0o700),
        (data.join("state.db"), 0o600),
        (data.join("state.db-wal"), 0o600),
        (data.join("state.db-shm"), 0o600),
        (data.join("server.lock"), 0o600),
    ] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
    assert!(
        server.log_text().contains("tightened"),
        "{}",
        server.log_text()
    );
}

#[tokio::test]
async fn an_open_data_dir_owned_by_someone_else_is_refused_with_the_reason() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to give the data dir to another uid");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let opts = ServerOptions {
        forge_url: "http://127.0.0.1:9".into(),
        extra_env: Vec::new(),
    };
    let env = Server::env_for(dir.path(), &opts);
    let log = dir.path().join("server.log");
    let mut guard = Server::spawn(dir.path(), &env, &log);
    let status = wait_exit(&mut guard.child, std::time::Duration::from_secs(20));
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("data dir") && text.contains("mode 755") && text.contains("uid 65534"),
        "{text}"
    );
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), 65534);
    assert!(!data.join("state.db").exists());
}
