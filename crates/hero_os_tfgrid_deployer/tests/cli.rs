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
        &["vm", "forget", "alice", "--force"],
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
    // Named by id, the question names whom it acts on as resolved, not the digits typed.
    let o = cli(&stack, &["--json", "user", "get", "alice"], None);
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["user_id"].to_string();
    for args in [["vm", "delete", id.as_str()], ["vm", "forget", id.as_str()]] {
        let err = text(&cli(&stack, &args, None)).1;
        assert!(
            err.contains("VM of alice") || err.contains("records of alice"),
            "{args:?}: {err}"
        );
    }
    // Digits are an id, so a name of digits only is refused before anything is sent.
    let o = cli(&stack, &["--json", "user", "create", "42"], None);
    assert!(!o.status.success());
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("digits only"),
        "{e}"
    );
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
    // Exactly that user: `alice` is not also `alice-b` (the subject used to be matched as a prefix).
    let o = cli(&stack, &["user", "create", "alice-b"], None);
    assert!(o.status.success(), "{:?}", text(&o));
    let (out, _) = text(&cli(&stack, &["events", "--user", "alice"], None));
    assert!(!out.contains("alice-b"), "{out}");
    let (out, _) = text(&cli(&stack, &["events", "--user", "alice-b"], None));
    assert!(out.contains("user.create"), "{out}");
    let o = cli(&stack, &["user", "delete", "alice-b", "-y"], None);
    assert!(o.status.success(), "{:?}", text(&o));

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

    // Forge's reachability is measured at each call, not remembered from start-up.
    let o = cli(&stack, &["--json", "server", "status"], None);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["forge_reachable"], true, "{info}");
    assert!(info["forge_version"].is_string(), "{info}");
    let mut stack = stack;
    stack.forge.guard.kill9();
    let o = cli(&stack, &["--json", "server", "status"], None);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["forge_reachable"], false, "{info}");
    assert!(info["forge_version"].is_null(), "{info}");
    assert!(
        info["forge_error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{info}"
    );
    // The status says why Forge does not answer, not only that it does not.
    let o = cli(&stack, &["server", "status"], None);
    let (out, _) = text(&o);
    assert!(
        out.lines().any(|l| l.starts_with("forge version")
            && l.contains("unknown: ")
            && l.contains("unreachable")),
        "{out}"
    );

    // A user whose creation stopped part-way (Forge down) claims neither an adoption nor an id.
    let o = cli(&stack, &["user", "create", "bob"], None);
    assert!(text(&o).1.contains("[forge_unavailable]"), "{:?}", text(&o));
    let o = cli(&stack, &["user", "get", "bob"], None);
    let (out, _) = text(&o);
    let field = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_owned())
            .unwrap_or_else(|| panic!("no {name}: {out}"))
    };
    assert_eq!(field("forge id"), "-", "{out}");
    assert_eq!(
        field("forge account"),
        "not settled yet (setup incomplete)",
        "{out}"
    );
    assert!(!out.contains("adopted"), "{out}");
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

/// The VM verbs against the real local backend (a sandbox with a real sshd): deploy with
/// --follow, list, ssh with the held key and the pinned host key, ssh-key --json, the Forge
/// password reset, delete, and job paging.
#[tokio::test]
async fn vm_walk_through_the_cli() {
    let stack = Stack::start().await;
    let o = cli(&stack, &["user", "create", "alice"], None);
    assert!(o.status.success(), "{:?}", text(&o));

    let o = cli(&stack, &["vm", "deploy", "alice", "--follow"], None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // The job is named first, before any progress line.
    assert_eq!(
        err.lines().next().unwrap(),
        "following job 1 (provision of alice); Ctrl-C detaches, the job keeps running",
        "{err}"
    );
    // Lines are stamped with their offset from the job's creation, increasing.
    let offsets: Vec<f64> = err
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.split_once("s]"))
        .map(|(t, _)| t.trim().parse().unwrap())
        .collect();
    assert!(offsets.len() > 5, "{err}");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(
        out.contains("job 1 succeeded: http://alice.localhost:"),
        "{out}"
    );

    // A replay of the finished job shows the same offsets, not all 0.0 s.
    let o = cli(&stack, &["job", "follow", "1"], None);
    let (_, replay) = text(&o);
    let replayed: Vec<f64> = replay
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.split_once("s]"))
        .map(|(t, _)| t.trim().parse().unwrap())
        .collect();
    assert_eq!(replayed, offsets, "{replay}");

    let o = cli(&stack, &["vm", "list"], None);
    let (out, _) = text(&o);
    let row = out
        .lines()
        .find(|l| l.starts_with("alice"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("ready") && row.contains("http://alice.localhost:"),
        "{out}"
    );
    let o = cli(&stack, &["--json", "vm", "list"], None);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["vms"][0]["forge_username"], "alice");
    assert_eq!(list["vms"][0]["state"], "ready");

    // ssh: host and port printed, the command runs on the VM through the pinned host key.
    let o = cli(
        &stack,
        &["vm", "ssh", "alice", "--", "echo", "hello-from-the-vm"],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), "hello-from-the-vm");
    let target = stack.client().vm_ssh_target(1).await.unwrap();
    assert!(
        err.contains(&format!("@{} port {}", target.host, target.port))
            && err.contains(target.host_key_fingerprint.as_deref().unwrap()),
        "{err}"
    );

    // Ctrl-C (SIGINT to the foreground group) while ssh runs: the temporary copy of the private key goes with
    // the CLI, as it does on a normal exit. Before, the signal ended the CLI and left the key in $TMPDIR. A
    // signal to the CLI alone (`kill PID`, or one that came before ssh was spawned and so never reached it)
    // stops ssh too: before, the CLI swallowed it and waited out the remote `sleep` with the key on disk.
    use nix::sys::signal::Signal::{SIGHUP, SIGINT, SIGTERM};
    for (signal, whole_group) in [
        (SIGINT, true),
        (SIGHUP, true),
        (SIGTERM, true),
        (SIGINT, false),
        (SIGTERM, false),
    ] {
        use std::os::unix::process::CommandExt;
        let tmp = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
            .arg("--server")
            .arg(format!("unix:{}", stack.server.socket.display()))
            .args(["vm", "ssh", "alice", "--", "sleep", "60"])
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut child = ProcessGuard {
            child,
            name: "vm ssh".into(),
        };
        let key_written = || {
            std::fs::read_dir(tmp.path())
                .unwrap()
                .flatten()
                .any(|d| d.path().join("id").exists())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !key_written() {
            assert!(std::time::Instant::now() < deadline, "ssh never started");
            poll_pause();
        }
        let pid = nix::unistd::Pid::from_raw(child.pid() as i32);
        if whole_group {
            nix::sys::signal::killpg(pid, signal).unwrap();
        } else {
            nix::sys::signal::kill(pid, signal).unwrap();
        }
        let status = wait_exit(&mut child.child, std::time::Duration::from_secs(30));
        assert!(!status.success(), "{signal:?}: {status:?}");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert!(
            left.is_empty(),
            "{signal:?} (group: {whole_group}) left {left:?}"
        );
    }

    // ssh-key --json: an object, never the bare key.
    let o = cli(&stack, &["--json", "vm", "ssh-key", "alice"], None);
    let key: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(key["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert!(key["fingerprint"].as_str().unwrap().starts_with("SHA256:"));

    // Reset the Forge password: the new one opens the account on Forge, the old one no longer.
    let old = text(&cli(&stack, &["user", "reveal-password", "alice"], None)).0;
    let o = cli(&stack, &["user", "reset-password", "alice"], None);
    assert!(
        !o.status.success(),
        "reset without --yes and without a terminal"
    );
    let o = cli(
        &stack,
        &["--json", "user", "reset-password", "alice", "--yes"],
        None,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let new = r["new_password"].as_str().unwrap().to_owned();
    assert_eq!(new.len(), 32);
    assert_ne!(new, old.trim());
    let http = reqwest::Client::new();
    for (password, want) in [(new.as_str(), 200), (old.trim(), 401)] {
        let status = http
            .get(format!("{}/api/v1/user", stack.forge.url))
            .basic_auth("alice", Some(password))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, want);
    }
    assert_eq!(
        text(&cli(&stack, &["user", "reveal-password", "alice"], None))
            .0
            .trim(),
        new
    );
    let o = cli(
        &stack,
        &["events", "--action", "user.reset_forge_password"],
        None,
    );
    let (out, _) = text(&o);
    assert!(out.contains("user:alice") && out.contains(" ok "), "{out}");
    assert!(!out.contains(&new), "the audit log shows the password");

    // The test prefix takes a flag, and its host name is a valid DNS label.
    let o = cli(&stack, &["user", "create", "deployer_test_zed"], None);
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("--test-user"), "{err}");
    let o = cli(
        &stack,
        &["user", "create", "deployer_test_zed", "--test-user"],
        None,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = cli(
        &stack,
        &["vm", "deploy", "deployer_test_zed", "--follow"],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("succeeded: http://deployer-test-zed.localhost:"),
        "{out}"
    );
    let o = cli(
        &stack,
        &["vm", "delete", "deployer_test_zed", "-y", "--follow"],
        None,
    );
    assert!(o.status.success(), "{:?}", text(&o));

    // A live VM is not forgotten: one line naming what still exists, and a stable code.
    let o = cli(&stack, &["vm", "forget", "alice", "--yes"], None);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains(
            "still on the backend: vm hero_u1_alice on local, gateway hero_u1_alice on local"
        ) && err.lines().count() == 1,
        "{err}"
    );
    let o = cli(&stack, &["--json", "vm", "forget", "alice", "--yes"], None);
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["kind"], "refused", "{e}");
    assert_eq!(e["detail"]["code"], "vm.still_exists", "{e}");

    let o = cli(&stack, &["vm", "delete", "alice", "-y", "--follow"], None);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = cli(&stack, &["vm", "list"], None);
    assert!(!text(&o).0.contains("alice"), "{:?}", text(&o));
    // The README's command: after a decommission nothing is left to forget, and it says so.
    let o = cli(&stack, &["vm", "forget", "alice", "--yes"], None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("vms forgotten") && out.contains("none") && out.contains("forced"),
        "{out}"
    );
    let o = cli(&stack, &["events", "--user", "alice"], None);
    assert!(text(&o).0.contains("vm.forget"), "{:?}", text(&o));

    // job list pages, with a hint that works as printed.
    let o = cli(&stack, &["job", "list", "--limit", "1"], None);
    let (out, _) = text(&o);
    let hint: Vec<String> = out
        .lines()
        .find_map(|l| l.strip_prefix("more: "))
        .unwrap_or_else(|| panic!("no paging hint: {out}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut args = vec!["job", "list", "--limit", "1"];
    args.extend(hint.iter().map(String::as_str));
    let o = cli(&stack, &args, None);
    let (out, _) = text(&o);
    assert!(out.lines().nth(1).unwrap().starts_with("3 "), "{out}");
}

/// Ctrl-C (a real SIGINT) while following: the CLI detaches, says how to re-attach, exits 130,
/// and the job runs on in the server.
#[tokio::test]
async fn ctrl_c_while_following_detaches_and_says_how_to_reattach() {
    let faults = tempfile::NamedTempFile::new().unwrap();
    // The job stalls in deploy_vm, so it is surely still running when the signal arrives.
    std::fs::write(faults.path(), r#"{"stall_at": "deploy_vm"}"#).unwrap();
    let stack = Stack::start_with(vec![(
        "HERO_DEPLOYER_TEST_FAULTS_FILE".into(),
        faults.path().display().to_string(),
    )])
    .await;
    assert!(cli(&stack, &["user", "create", "alice"], None)
        .status
        .success());
    let child = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .arg("--server")
        .arg(format!("unix:{}", stack.server.socket.display()))
        .args(["vm", "deploy", "alice", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ProcessGuard {
        child,
        name: "cli".into(),
    };
    let child = &mut guard.child;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("no first line");
    assert!(first.starts_with("following job 1 "), "{first}");
    // Wait until the job is inside the stalled step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = vec![first];
    while !seen.iter().any(|l| l.contains("deploy_vm")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        seen.push(
            rx.recv_timeout(left)
                .unwrap_or_else(|_| panic!("{seen:#?}")),
        );
    }
    signal(child.id(), "INT");
    let status = wait_exit(child, std::time::Duration::from_secs(10));
    let rest: Vec<String> = rx.iter().collect();
    assert_eq!(status.code(), Some(130), "{rest:#?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("detached from job 1; it keeps running in the server. Re-attach with `hero_os_tfgrid_deployer job follow 1`"),
        "{rest:#?}"
    );
    let job = stack.client().get_job(1).await.unwrap();
    assert!(job.state.is_active(), "{:?}", job.state);
}
