//! `server start --detach`, a second start, `server status` and `server stop`, with the CLI's
//! own HERO_DEPLOYER_ENDPOINT exported (the CLI passes its environment to the server) and the
//! data dir elsewhere than the default. Real CLI and server binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../hero_os_tfgrid_deployer_server/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Kills (SIGKILL, by the pid its lock file names, if that is a server) whatever server still
/// holds `data` when the test ends, so a failing test leaves nothing running.
struct ServerReaper {
    data: PathBuf,
}

impl Drop for ServerReaper {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(self.data.join("server.lock")) else {
            return;
        };
        let pid = pid.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("hero_os_tfgrid_deployer_server") {
            support::signal(pid.parse().unwrap(), "KILL");
        }
    }
}

fn cli(root: &Path, sock: &str, args: &[&str]) -> Output {
    let socket = root.join(sock).join("hero_os_tfgrid_deployer/rpc.sock");
    Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", root.join("home"))
        .env("HERO_SOCKET_DIR", root.join(sock))
        .env("HERO_DEPLOYER_DATA_DIR", root.join("data"))
        .env("HERO_DEPLOYER_FORGE_URL", "http://127.0.0.1:9")
        .env("HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN", "127.0.0.1:0")
        // The CLI's own variable, exported as README tells operators to.
        .env(
            "HERO_DEPLOYER_ENDPOINT",
            format!("unix:{}", socket.display()),
        )
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn start_detached_then_a_second_start_then_status_then_stop() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _reaper = ServerReaper {
        data: root.join("data"),
    };

    let started = cli(root, "sock", &["server", "start", "--detach"]);
    assert!(started.status.success(), "{}", text(&started));
    let out = String::from_utf8_lossy(&started.stdout).into_owned();
    let log = root.join("data/server.log");
    assert!(
        out.contains("server running (pid") && out.contains(&log.display().to_string()),
        "{out}"
    );
    assert!(log.exists());
    assert!(
        !root.join("home/hero").exists(),
        "something was written under the default data dir"
    );
    let pid: u32 = std::fs::read_to_string(root.join("data/server.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A second start where one answers: refused, and it says so.
    let again = cli(root, "sock", &["server", "start", "--detach"]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(!String::from_utf8_lossy(&again.stdout).contains("server running"));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already answers"),
        "{}",
        text(&again)
    );
    // A second start on the same data dir but another socket: its server exits on the lock, and
    // that is what the CLI reports (not "server running").
    let other = cli(root, "sock2", &["server", "start", "--detach"]);
    assert!(!other.status.success(), "{}", text(&other));
    assert!(!String::from_utf8_lossy(&other.stdout).contains("server running"));
    let err = String::from_utf8_lossy(&other.stderr).into_owned();
    assert!(
        err.contains("already running on data dir") && err.contains(&format!("pid {pid}")),
        "{}",
        text(&other)
    );

    let status = cli(root, "sock", &["server", "status"]);
    assert!(status.status.success(), "{}", text(&status));
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(shown.contains("http://127.0.0.1:9"), "{shown}");
    // Forge does not answer there: the status says why, not only "unknown".
    let forge_line = shown
        .lines()
        .find(|l| l.starts_with("forge version"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        forge_line.contains("unknown: ") && forge_line.contains("unreachable"),
        "{shown}"
    );

    let stopped = cli(root, "sock", &["server", "stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(
        String::from_utf8_lossy(&stopped.stdout).contains(&format!("server stopped (pid {pid}")),
        "{}",
        text(&stopped)
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap()
                .is_empty()
    );
    assert!(!root.join("sock/hero_os_tfgrid_deployer/rpc.sock").exists());
    let after = cli(root, "sock", &["server", "status"]);
    assert!(!after.status.success());
    let stop_again = cli(root, "sock", &["server", "stop"]);
    assert!(!stop_again.status.success());
    assert!(
        String::from_utf8_lossy(&stop_again.stderr).contains("cannot reach the deployer server"),
        "{}",
        text(&stop_again)
    );
}

/// `--detach --config F` where F names its own `socket_dir` and `data_dir` (README's example): the CLI waits for
/// the server on the socket the config names, not on its own default, and the log goes to the config's data dir.
/// Before, it said the server never answered and left it running.
#[test]
fn start_detached_with_a_config_naming_its_own_socket_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _reaper = ServerReaper {
        data: root.join("cfgdata"),
    };
    let config = root.join("deployer.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nsocket_dir = {:?}\n",
            root.join("cfgdata").display().to_string(),
            root.join("cfgsock").display().to_string()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", root.join("home"))
            .env("HERO_DEPLOYER_FORGE_URL", "http://127.0.0.1:9")
            .env("HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN", "127.0.0.1:0")
            .args(args)
            .output()
            .unwrap()
    };
    let started = run(&[
        "server",
        "start",
        "--detach",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(started.status.success(), "{}", text(&started));
    let socket = root.join("cfgsock/hero_os_tfgrid_deployer/rpc.sock");
    let out = String::from_utf8_lossy(&started.stdout).into_owned();
    assert!(
        out.contains(&socket.display().to_string())
            && out.contains(&root.join("cfgdata/server.log").display().to_string()),
        "{out}"
    );
    let server = format!("unix:{}", socket.display());
    let stopped = run(&["--server", &server, "server", "stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(!socket.exists());
}
