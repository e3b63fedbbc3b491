//! `demo --no-wait` end to end with the real binaries (dev Forge, server, CLI): brings everything
//! up on embedded defaults, provisions, prints the URL and credentials, decommissions, stops the
//! children, and leaves no process behind. Needs the workspace binaries built (scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{free_port, processes_mentioning, DirReaper, RunningDemo};

#[test]
fn demo_provisions_prints_the_url_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .args([
            "demo",
            "alice",
            "--no-wait",
            "--gateway-port",
            &port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .env("HOME", dir.path())
        // An operator's production settings exported in the shell never reach the demo's children.
        .env("HERO_DEPLOYER_CONFIG", dir.path().join("production.toml"))
        .env("HERO_DEPLOYER_SECRETS_BACKEND", "hero_proc")
        .env("HERO_DEPLOYER_FORGE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("URL:            http://alice.localhost:{port}/")),
        "{stdout}"
    );
    assert!(stdout.contains("Forge username: alice"), "{stdout}");
    assert!(
        stdout.contains(&format!("Dashboard:      http://127.0.0.1:{admin_port}/")),
        "{stdout}"
    );
    // The operator signs in with a dev Forge account whose password only the demo knows.
    let sign_in = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  Sign in:        with Forge as hero-operator / "))
        .unwrap_or_else(|| panic!("no operator sign-in line: {stdout}"));
    assert_eq!(sign_in.len(), 24, "{stdout}");
    let op_file = dir.path().join("operator.password");
    assert_eq!(std::fs::read_to_string(&op_file).unwrap().trim(), sign_in);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&op_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("edge"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  Forge password: "))
        .unwrap();
    assert_eq!(password.len(), 32, "{stdout}");
    assert!(
        stderr.contains("step 11/12 verify_health: done"),
        "{stderr}"
    );
    assert!(
        stderr.contains("step 4/4 mark_decommissioned: done"),
        "{stderr}"
    );
    // Forge, server and the sandbox are gone.
    let needle = dir.path().display().to_string();
    assert!(
        processes_mentioning(&needle).is_empty(),
        "left behind: {:?}",
        processes_mentioning(&needle)
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "gateway still listening"
    );
}

/// A server on the demo directory, killed by PID on drop.
struct ServerGuard(std::process::Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(socket: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .arg("--server")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn vm_and_job_commands_on_a_kept_demo_vm() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = DirReaper(dir.path().to_path_buf());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .args([
            "demo",
            "bob",
            "--no-wait",
            "--keep",
            "--no-dashboard",
            "--gateway-port",
            &port.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server again, on the demo's data (the Forge is not needed for VM operations).
    let server_bin = std::path::Path::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .with_file_name("hero_os_tfgrid_deployer_server");
    let _server = ServerGuard(
        Command::new(server_bin)
            .env("HOME", dir.path())
            .env("HERO_SOCKET_DIR", dir.path().join("sock"))
            .env("HERO_DEPLOYER_DATA_DIR", dir.path().join("data"))
            .env("HERO_DEPLOYER_FORGE_URL", "http://127.0.0.1:9")
            .env(
                "HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN",
                format!("127.0.0.1:{port}"),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let socket = dir.path().join("sock/hero_os_tfgrid_deployer/rpc.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not come back"
        );
        std::thread::yield_now();
    }

    let (ok, stdout, stderr) = cli(&socket, &["job", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("bob") && stdout.contains("provision") && stdout.contains("succeeded"),
        "{stdout}"
    );
    let (ok, stdout, _) = cli(&socket, &["job", "show", "1"]);
    assert!(
        ok && stdout.contains("12/12") && stdout.contains("verify_health"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = cli(&socket, &["vm", "show", "bob"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("http://bob.localhost:{port}/")),
        "{stdout}"
    );
    // The key file is 0600 whatever was at the path before: nothing, a world-readable file, or a
    // symlink (replaced, its target untouched).
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("bob_key");
    let readable = dir.path().join("readable_key");
    std::fs::write(&readable, "old").unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "untouched").unwrap();
    let link = dir.path().join("linked_key");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for path in [&key, &readable, &link] {
        let (ok, _, stderr) = cli(
            &socket,
            &["vm", "ssh-key", "bob", "--out", path.to_str().unwrap()],
        );
        assert!(ok, "{stderr}");
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(meta.file_type().is_file(), "{}", path.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            path.display()
        );
        assert!(std::fs::read_to_string(path)
            .unwrap()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    let (ok, stdout, stderr) = cli(&socket, &["reconcile"]);
    assert!(ok && stdout.contains("no orphans"), "{stdout}{stderr}");
    let (ok, _, stderr) = cli(&socket, &["vm", "delete", "bob", "--follow", "--yes"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("step 4/4 mark_decommissioned: done"),
        "{stderr}"
    );
    // A finished job cannot be cancelled or retried: one clear line, exit 1.
    let (ok, _, stderr) = cli(&socket, &["job", "cancel", "2"]);
    assert!(
        !ok && stderr.starts_with("error: ") && stderr.contains("cannot be cancelled"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&socket, &["job", "retry", "1"]);
    assert!(
        !ok && stderr.contains("only failed jobs can be retried"),
        "{stderr}"
    );
    let sandbox = dir.path().join("data/local/sandboxes");
    assert_eq!(std::fs::read_dir(&sandbox).unwrap().count(), 0);
}

/// A terminal's Ctrl-C reaches the whole foreground process group. The demo runs as the leader
/// of its own group here (as a shell runs it), gets a real SIGINT sent to the group, and must
/// still decommission (its children are in groups of their own, so the server survives the
/// signal) and stop everything.
#[test]
fn ctrl_c_to_the_process_group_decommissions_then_stops() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = DirReaper(dir.path().to_path_buf());
    let port = free_port();
    let demo = RunningDemo::start(
        dir.path(),
        &[
            "alice",
            "--no-dashboard",
            "--gateway-port",
            &port.to_string(),
        ],
    );
    let seen = demo.stdout.clone();
    assert!(
        seen.iter()
            .any(|l| l.contains("export HERO_DEPLOYER_ENDPOINT=unix:")),
        "{seen:#?}"
    );
    // The URL answers before the signal.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let stderr = demo.ctrl_c();
    assert!(stderr.contains("decommissioning alice"), "{stderr}");
    assert!(stderr.contains("mark_decommissioned: done"), "{stderr}");
    let needle = dir.path().display().to_string();
    assert!(
        processes_mentioning(&needle).is_empty(),
        "left behind: {:?}",
        processes_mentioning(&needle)
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "gateway still listening"
    );
}

/// A gateway port someone else holds: the terminal gets the server's own reason, not only
/// "exited with status 1; see server.log".
#[test]
fn a_taken_gateway_port_is_named_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = DirReaper(dir.path().to_path_buf());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .args([
            "demo",
            "alice",
            "--no-wait",
            "--no-dashboard",
            "--gateway-port",
        ])
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.to_lowercase().contains("in use"),
        "{stderr}"
    );
}
