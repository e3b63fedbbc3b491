//! The CLI binary against the real server and dev Forge: what an operator types, what they see,
//! and that failures are one line on stderr with a non-zero exit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../hero_os_tfgrid_deployer_server/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::*;

fn cli(stack: &Stack, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .arg("--server")
        .arg(format!("unix:{}", stack.server.socket.display()))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn operator_walk_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let forge = DevForge::start(dir.path());
    let server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: forge.url.clone(),
            extra_env: vec![],
        },
    );
    let stack = Stack {
        _dir: dir,
        forge,
        server,
    };

    // Without the admin token: a one-line reason that says what to do.
    let o = cli(&stack, &["user", "create", "alice"], None);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("secret set deployer/forge_admin_token"),
        "{err}"
    );

    // The admin token goes in through stdin, never argv.
    let token = stack.forge.admin_token();
    let o = cli(
        &stack,
        &["secret", "set", "deployer/forge_admin_token"],
        Some(&format!("{token}\n")),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = cli(
        &stack,
        &["secret", "get", "deployer/forge_admin_token"],
        None,
    );
    let (out, _) = text(&o);
    assert!(
        !out.contains(&token),
        "secret get printed the value without --show"
    );
    assert!(out.contains("chars"));
    let o = cli(
        &stack,
        &["secret", "get", "deployer/forge_admin_token", "--show"],
        None,
    );
    assert_eq!(text(&o).0.trim(), token);

    let o = cli(
        &stack,
        &["user", "create", "alice", "--display-name", "Alice A"],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("Initial password"), "{out}");

    let o = cli(&stack, &["--json", "user", "get", "alice"], None);
    let user: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(user["forge_username"], "alice");
    assert_eq!(user["forge_token_set"], true);

    let o = cli(&stack, &["user", "list"], None);
    let (out, _) = text(&o);
    assert!(out.starts_with("ID"), "{out}");
    assert!(out.contains("alice"));

    let o = cli(&stack, &["user", "reveal-password", "alice"], None);
    assert_eq!(text(&o).0.trim().len(), 32);

    let o = cli(&stack, &["user", "create", "Alice"], None);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert_eq!(
        err.trim(),
        "error: username must be lowercase [invalid_username]"
    );

    let o = cli(&stack, &["user", "create", "alice"], None);
    assert!(text(&o).1.contains("[already_exists]"));

    // Destructive without a terminal needs --yes.
    let o = cli(&stack, &["user", "delete", "alice"], None);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--yes"));
    let o = cli(&stack, &["user", "delete", "alice", "--yes"], None);
    assert!(o.status.success(), "{:?}", text(&o));

    let o = cli(&stack, &["events", "--user", "alice"], None);
    let (out, _) = text(&o);
    assert!(
        out.contains("user.delete") && out.contains("user.create"),
        "{out}"
    );

    let o = cli(&stack, &["server", "status"], None);
    let (out, _) = text(&o);
    assert!(out.contains("forge version"), "{out}");
}

#[test]
fn unreachable_server_and_help() {
    let o = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .args(["--server", "unix:/nonexistent/rpc.sock", "user", "list"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is it running?") && err.lines().count() == 1,
        "{err}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for word in ["server", "user", "secret", "events"] {
        assert!(help.contains(word), "{help}");
    }
}
