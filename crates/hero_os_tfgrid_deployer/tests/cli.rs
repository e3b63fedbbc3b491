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
    // Masked means nothing of the value: no prefix, no length.
    assert_eq!(out.trim(), "******** (set; --show reveals it)");
    assert!(!out.contains(&token[..2]) && !out.contains(&token.len().to_string()));
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
    // The account is ready, not the VM, and the line says which command makes the VM.
    assert!(
        out.starts_with("Forge account alice is ready (user_id 1). No VM yet: `hero_os_tfgrid_deployer vm deploy alice`."),
        "{out}"
    );
    assert!(!out.contains("User alice is ready"), "{out}");
    // Labels and values line up in one column.
    let value_columns: Vec<usize> = ["Forge login", "Initial password", "Forge API token"]
        .iter()
        .map(|label| {
            let line = out
                .lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no {label} line: {out}"));
            line.len()
                - line[line.find(label).unwrap() + label.len()..]
                    .trim_start()
                    .len()
        })
        .collect();
    assert!(
        value_columns.windows(2).all(|w| w[0] == w[1]),
        "{value_columns:?}\n{out}"
    );

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

    // Again for a known user: the error, and the record it found.
    let o = cli(&stack, &["user", "create", "alice"], None);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("[already_exists]"), "{err}");
    assert!(
        out.starts_with("User alice already exists:")
            && out
                .lines()
                .any(|l| l.starts_with("forge account") && l.ends_with("created by the deployer")),
        "{out}"
    );
    let o = cli(&stack, &["--json", "user", "create", "alice"], None);
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["kind"], "already_exists");
    assert_eq!(e["detail"]["forge_username"], "alice");
    assert!(e["message"].as_str().unwrap().contains("alice"), "{e}");

    // Destructive commands: one rule. Without a terminal and without --yes/-y they refuse and
    // change nothing.
    for args in [
        &["user", "delete", "alice"][..],
        &["vm", "delete", "alice"],
        &["secret", "delete", "deployer/forge_admin_token"],
        &["reconcile", "--fix"],
    ] {
        let o = cli(&stack, args, None);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{args:?} went ahead: {out}");
        assert!(
            err.contains("pass --yes (-y) to confirm") && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        let o = cli(&stack, &[&["--json"][..], args].concat(), None);
        let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(e["kind"], "confirmation_required", "{args:?}");
    }
    let o = cli(&stack, &["secret", "list"], None);
    assert!(
        text(&o).0.contains("deployer/forge_admin_token"),
        "secret deleted without --yes"
    );
    let o = cli(&stack, &["user", "get", "alice"], None);
    assert!(o.status.success(), "user deleted without --yes");
    let o = cli(&stack, &["user", "delete", "alice", "-y"], None);
    assert!(o.status.success(), "{:?}", text(&o));

    let o = cli(&stack, &["events", "--user", "alice"], None);
    let (out, _) = text(&o);
    assert!(
        out.contains("user.delete") && out.contains("user.create"),
        "{out}"
    );

    // Paging hints under every listing that pages, and the hint works as printed.
    let o = cli(&stack, &["events", "--limit", "1"], None);
    let (out, _) = text(&o);
    let hint = out
        .lines()
        .find_map(|l| l.strip_prefix("more: "))
        .unwrap_or_else(|| panic!("no paging hint: {out}"))
        .to_owned();
    let mut args = vec!["events", "--limit", "1"];
    args.extend(hint.split_whitespace());
    let o = cli(&stack, &args, None);
    let (next, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_ne!(next.lines().nth(1), out.lines().nth(1), "{next}");

    // --json means JSON on stdout for failures too, with a stable kind.
    let o = cli(&stack, &["--json", "user", "get", "nobody"], None);
    assert!(!o.status.success());
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["kind"], "not_found", "{e}");

    // Another service's address: one line saying so, not its page.
    let forge_addr = stack
        .forge
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    for server in [stack.forge.url.clone(), forge_addr.to_owned()] {
        let o = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
            .args(["--server", &server, "user", "list"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.lines().count() == 1
                && err.contains("is it the deployer server")
                && !err.contains('<'),
            "{server}: {err}"
        );
    }

    let o = cli(&stack, &["server", "status"], None);
    let (out, _) = text(&o);
    assert!(out.contains("forge version"), "{out}");
}

#[test]
fn bad_server_addresses_and_usage_errors() {
    for (server, want) in [
        ("ftp://x", "unsupported scheme \"ftp\""),
        ("http://x:port", "invalid port"),
        ("http://host", "has no port"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
            .args(["--server", server, "user", "list"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.lines().count() == 1 && err.starts_with("error: --server: ") && err.contains(want),
            "{server}: {err}"
        );
        assert!(!err.contains("http://ftp://"), "{err}");
        let o = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
            .args(["--json", "--server", server, "user", "list"])
            .output()
            .unwrap();
        let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(e["kind"], "invalid_endpoint");
    }
    // Unreachable, with --json.
    let o = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .args([
            "--json",
            "--server",
            "unix:/nonexistent/rpc.sock",
            "user",
            "list",
        ])
        .output()
        .unwrap();
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["kind"], "unreachable");
    assert!(e["message"].as_str().unwrap().contains("is it running?"));
    // A usage error: clap's text and exit 2 for people, a JSON object with --json.
    let o = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .args(["user", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .args(["--json", "user", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["kind"], "usage");
    assert!(e["message"].as_str().unwrap().contains("frobnicate"), "{e}");
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
