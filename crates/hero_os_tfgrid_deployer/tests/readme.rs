//! Every command in README.md's `sh` code blocks, run as written (through `sh -c`, so `<`
//! redirections work as in a shell) against real peers: the deployer server it starts itself with
//! `server start --detach`, the dev Forge, and the local backend (a sandbox with a real sshd).
//! A line that cannot run here is skipped only if it is listed in [`SKIP`] with its reason; a
//! line that should fail names the failure it must show in [`EXPECTED_FAILURES`]. Any other
//! README command that does not run, or exits non-zero, fails the test: the README stays true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../hero_os_tfgrid_deployer_server/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// Lines not run here, each with the reason.
const SKIP: &[(&str, &str)] = &[
    (
        "scripts/demo.sh",
        "the demo has its own test (tests/demo.rs)",
    ),
    (
        "scripts/test.sh",
        "the test suite itself: running it here would recurse",
    ),
    (
        "hero_os_tfgrid_deployer vm deploy bob --backend opentofu --follow",
        "needs the ThreeFold Grid (tofu and a funded mnemonic)",
    ),
    (
        "scripts/acceptance-live.sh --forge-url https://forge.ourworld.tf --admin-token-file ~/secrets/forge_admin_token --mnemonic-file - --network test --nodes <gateway node ids> < ~/secrets/tfgrid_mnemonic",
        "needs a real Forge and grid; backends/tests/acceptance_script.rs runs it without credentials (skipped)",
    ),
];

/// Lines that must fail, in the README's order of events, with what they must say.
const EXPECTED_FAILURES: &[(&str, &str)] = &[
    // Job 1 succeeded: there is nothing to resume or cancel, and the CLI says so in one line.
    (
        "hero_os_tfgrid_deployer job retry 1",
        "only failed jobs can be retried",
    ),
    (
        "hero_os_tfgrid_deployer job cancel 1 --yes",
        "cannot be cancelled",
    ),
];

/// The commands of README.md's `sh` blocks, comments and blank lines dropped.
fn readme_commands() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
            continue;
        }
        if !in_sh || t.is_empty() || t.starts_with('#') {
            continue;
        }
        // A trailing comment starts at two spaces and a '#', as written throughout the README.
        let cmd = match t.find("  #") {
            Some(i) => t[..i].trim_end(),
            None => t,
        };
        out.push(cmd.to_owned());
    }
    out
}

/// Kills the detached server (by its PID) when the test ends, whatever happens.
struct PidGuard(Option<u32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal(pid, "KILL");
        }
    }
}

#[test]
fn every_readme_command_runs_as_written() {
    let commands = readme_commands();
    for (skip, _) in SKIP.iter().chain(EXPECTED_FAILURES) {
        assert!(
            commands.iter().any(|c| c == skip),
            "{skip:?} is listed here but no longer in the README"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let forge = DevForge::start(root);
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("admin-token.txt"), forge.admin_token()).unwrap();
    // The class the README's `user create --from-file people.csv` line creates.
    std::fs::write(
        work.join("people.csv"),
        "username,display_name\nann,Ann Example\nben,Ben Example\n",
    )
    .unwrap();
    let bin_dir: PathBuf = Path::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let socket = root.join("sock/hero_os_tfgrid_deployer/rpc.sock");
    let env: Vec<(&str, String)> = vec![
        ("PATH", path),
        ("HOME", root.display().to_string()),
        ("HERO_SOCKET_DIR", root.join("sock").display().to_string()),
        (
            "HERO_DEPLOYER_DATA_DIR",
            root.join("data").display().to_string(),
        ),
        ("HERO_DEPLOYER_FORGE_URL", forge.url.clone()),
        ("HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN", "127.0.0.1:0".into()),
        // Exported as an operator would: the CLI uses it, the server must not trip over it.
        (
            "HERO_DEPLOYER_ENDPOINT",
            format!("unix:{}", socket.display()),
        ),
        ("HERO_LOG", "info".into()),
    ];
    let mut server = PidGuard(None);
    let mut ran = 0;
    for cmd in &commands {
        if let Some((_, why)) = SKIP.iter().find(|(c, _)| c == cmd) {
            eprintln!("skipped: {cmd} ({why})");
            continue;
        }
        assert!(
            cmd.starts_with("hero_os_tfgrid_deployer "),
            "README command {cmd:?} is neither a CLI command nor in SKIP with a reason"
        );
        let o = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&work)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        ran += 1;
        match EXPECTED_FAILURES.iter().find(|(c, _)| c == cmd) {
            Some((_, want)) => assert!(
                !o.status.success() && err.contains(want) && err.lines().count() == 1,
                "{cmd}: expected a one-line failure with {want:?}\nstdout: {out}\nstderr: {err}"
            ),
            None => assert!(
                o.status.success(),
                "{cmd} failed ({})\nstdout: {out}\nstderr: {err}",
                o.status
            ),
        }
        if cmd.contains("server start --detach") {
            let pid = out
                .split("pid ")
                .nth(1)
                .and_then(|r| {
                    r.split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|d| d.parse().ok())
                })
                .unwrap_or_else(|| panic!("no pid in {out:?}"));
            server.0 = Some(pid);
        }
    }
    assert!(ran >= 20, "only {ran} README commands ran");
    // What the walk left behind is what the README says: alice's VM decommissioned, the key file
    // written private.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(work.join("key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    drop(server);
}

/// The README's TOML example is a configuration the server accepts (unknown keys are rejected,
/// so a wrong section or key name fails here). Its paths point into a temp dir, and the
/// environment overlay aims Forge at a closed port and the gateway at a free one, so nothing
/// leaves this machine.
#[test]
fn the_readme_toml_example_is_accepted() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let block = text
        .split("```toml\n")
        .nth(1)
        .and_then(|t| t.split("```").next())
        .expect("a toml block in the README");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut toml = String::new();
    for line in block.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            "data_dir" => {
                toml.push_str(&format!("data_dir = \"{}\"\n", root.join("data").display()))
            }
            "socket_dir" => toml.push_str(&format!(
                "socket_dir = \"{}\"\n",
                root.join("sock").display()
            )),
            _ => {
                toml.push_str(line);
                toml.push('\n');
            }
        }
    }
    assert!(
        toml.contains("[provision]") && toml.contains("socket_dir"),
        "{toml}"
    );
    let config = root.join("deployer.toml");
    std::fs::write(&config, &toml).unwrap();
    let log = root.join("server.log");
    let mut server = Server::spawn(
        root,
        &[
            ("HERO_DEPLOYER_CONFIG".into(), config.display().to_string()),
            (
                "HERO_DEPLOYER_FORGE_URL".into(),
                "http://127.0.0.1:9".into(),
            ),
            (
                "HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN".into(),
                "127.0.0.1:0".into(),
            ),
        ],
        &log,
    );
    let socket = root.join("sock/hero_os_tfgrid_deployer/rpc.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "the server refused the README's TOML ({status}):\n{}\n{toml}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(std::time::Instant::now() < deadline, "server not ready");
        poll_pause();
    }
    let _ = server.terminate();
}
