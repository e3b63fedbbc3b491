//! Batches through the real CLI binary against the real server, the dev Forge (hero_devforge,
//! the named Forgejo stand-in) and the local backend: `user create --from-file` with 30 good
//! and 3 bad lines, and `vm deploy --users` / `--all-without-vm` under the server's concurrency
//! limit with the combined progress view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../hero_os_tfgrid_deployer_server/tests/support/mod.rs"]
mod support;

use std::process::{Command, Output, Stdio};

use hero_os_tfgrid_deployer_sdk::jobs::{JobState, ListJobsParams};
use hero_os_tfgrid_deployer_sdk::types::{ListEventsParams, ListUsersParams};
use hero_os_tfgrid_deployer_sdk::ErrorKind;
use support::*;

/// At most two jobs run at once; a 4 s deadline for the polling steps keeps failures short.
const CONFIG: &str = r#"
[provision]
max_concurrent_jobs = 2
max_attempts = 3
backoff_base_ms = 50
backoff_max_ms = 200
poll_ms = 100

[provision.step_deadline_secs]
wait_ssh = 10
verify_health = 10
"#;

async fn start() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deployer.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let forge = DevForge::start(dir.path());
    let server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: forge.url.clone(),
            extra_env: vec![("HERO_DEPLOYER_CONFIG".into(), config.display().to_string())],
        },
    );
    server.set_admin_token(&forge.admin_token()).await;
    Stack {
        _dir: dir,
        forge,
        server,
    }
}

/// Kills every sandbox process of the stack's local backend when dropped (by PID).
struct SandboxReaper(String);

impl Drop for SandboxReaper {
    fn drop(&mut self) {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                if String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .contains(&self.0)
                {
                    signal(pid, "KILL");
                }
            }
        }
    }
}

fn reaper(stack: &Stack) -> SandboxReaper {
    SandboxReaper(format!(
        "{}/",
        stack.server.data_dir().join("local").display()
    ))
}

fn cli(stack: &Stack, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .arg("--server")
        .arg(format!("unix:{}", stack.server.socket.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The result column of the report line for `line`.
fn result_of(out: &str, line: u64) -> String {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(&line.to_string()))
        .unwrap_or_else(|| panic!("no report line for line {line}:\n{out}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_users_from_a_csv_with_three_bad_lines() {
    let stack = start().await;
    let c = stack.client();
    // alice exists before the batch; her email is then taken on Forge.
    c.create_user("alice", None, None).await.unwrap();

    let mut csv = String::from("username,display_name,email\n");
    let mut expected_good = Vec::new();
    let mut line = 1u64;
    let (mut bad_upper, mut bad_dup, mut bad_forge) = (0, 0, 0);
    for i in 1..=30 {
        line += 1;
        let name = format!("student-{i:02}");
        csv.push_str(&format!(
            "{name},\"Student {i:02}, Class A\",{name}@school.example.org\n"
        ));
        expected_good.push((line, name));
        match i {
            10 => {
                line += 1;
                bad_upper = line;
                csv.push_str("Student-99,Upper Case,upper@school.example.org\n");
            }
            20 => {
                line += 1;
                bad_dup = line;
                csv.push_str("student-05,Again,again@school.example.org\n");
            }
            25 => {
                line += 1;
                bad_forge = line;
                csv.push_str("mallory,Mallory,alice@nomail.demo.ourworld.tf\n");
            }
            _ => {}
        }
    }
    let file = stack.server.root.join("people.csv");
    std::fs::write(&file, &csv).unwrap();

    let o = cli(
        &stack,
        &["user", "create", "--from-file", file.to_str().unwrap()],
    );
    let (out, err) = text(&o);
    assert!(!o.status.success(), "bad lines make the exit non-zero");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("3 line(s)"), "{err}");
    assert!(out.contains("30 created, 0 skipped, 3 refused"), "{out}");
    for (line, name) in &expected_good {
        let r = result_of(&out, *line);
        assert!(r.contains(name) && r.contains("created"), "{r}");
    }
    let r = result_of(&out, bad_upper);
    assert!(r.contains("refused") && r.contains("lowercase"), "{r}");
    let r = result_of(&out, bad_dup);
    assert!(
        r.contains("refused") && r.contains("already on line 6"),
        "{r}"
    );
    let r = result_of(&out, bad_forge);
    assert!(
        r.contains("mallory") && r.contains("refused") && r.contains("forge_conflict"),
        "{r}"
    );
    assert!(r.contains("nothing was kept"), "{r}");
    assert!(
        !out.contains("Initial password "),
        "no password printed in a batch: {out}"
    );

    // 31 users: alice and the 30, every one complete; mallory left no record (nor a pending one).
    let page = c
        .list_users(&ListUsersParams {
            filter: None,
            cursor: None,
            limit: Some(500),
            before: None,
            expires_before: None,
        })
        .await
        .unwrap();
    assert_eq!(page.total, 31, "{:?}", page.users);
    assert!(page.users.iter().all(|u| u.setup_complete));
    let e = c.find_user("mallory").await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound));
    for (_, name) in &expected_good {
        let u = c.find_user(name).await.unwrap();
        assert!(u.forge_token_set && u.initial_password_held, "{u:?}");
        assert!(u.display_name.as_deref().unwrap().contains(", Class A"));
    }
    // The Forge accounts exist on the dev Forge, and mallory's does not.
    for (_, name) in &expected_good {
        assert!(forge_has(&stack, name).await, "{name} not on Forge");
    }
    assert!(!forge_has(&stack, "mallory").await);
    // The rollback is the refused create's own, in its audit line: the server removed the record under the
    // name's claim (before, the CLI found and then deleted it, a window another create could fall into).
    let events = c
        .list_events(&ListEventsParams {
            user: Some("mallory".into()),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = events
        .events
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].0, "user.create");
    assert_ne!(actions[0].1, "ok");
    let detail = events.events[0].detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("record this call made was removed"),
        "{detail}"
    );

    // The same file again: the 30 are skipped, the 3 refused again, nothing is made twice.
    let o = cli(
        &stack,
        &["user", "create", "--from-file", file.to_str().unwrap()],
    );
    let (out, _) = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("0 created, 30 skipped, 3 refused"), "{out}");
    // With --json: one document on stdout, the error carrying the report (before: the report, then a second
    // document for the error).
    let o = cli(
        &stack,
        &[
            "--json",
            "user",
            "create",
            "--from-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", text(&o).0));
    assert_eq!(doc["kind"], "lines_refused", "{doc}");
    assert_eq!(
        doc["detail"]["refused"].as_array().unwrap().len(),
        3,
        "{doc}"
    );
    assert_eq!(
        doc["detail"]["skipped"].as_array().unwrap().len(),
        30,
        "{doc}"
    );

    // A throw-away test name in a people file takes --test-user, as a single `user create` does.
    let test_file = file.with_file_name("test-people.csv");
    std::fs::write(&test_file, "username\ndeployer_test_batch1\n").unwrap();
    let o = cli(
        &stack,
        &["user", "create", "--from-file", test_file.to_str().unwrap()],
    );
    let (out, _) = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains("0 created, 0 skipped, 1 refused") && out.contains("--test-user"),
        "{out}"
    );
    let o = cli(
        &stack,
        &[
            "user",
            "create",
            "--test-user",
            "--from-file",
            test_file.to_str().unwrap(),
        ],
    );
    let (out, _) = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("1 created"), "{out}");
    let o = cli(&stack, &["user", "delete", "deployer_test_batch1", "-y"]);
    assert!(o.status.success(), "{:?}", text(&o));

    // A file-level problem refuses the whole file, naming line 1.
    std::fs::write(&file, "login,email\nzoe,z@x.org\n").unwrap();
    let o = cli(
        &stack,
        &["user", "create", "--from-file", file.to_str().unwrap()],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("line 1: unknown column \"login\"") && err.lines().count() == 1,
        "{err}"
    );
    let o = cli(
        &stack,
        &["user", "create", "--from-file", "/nonexistent/people.csv"],
    );
    assert!(text(&o).1.contains("cannot read /nonexistent/people.csv"));
    // An endless file is refused after one byte past the bound, not read to its end (it never ends).
    let o = cli(&stack, &["user", "create", "--from-file", "/dev/zero"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("more than 1048576 bytes"), "{err}");
    // A single name breaking the rules is refused before anything is sent, with the rule.
    let o = cli(&stack, &["--json", "user", "create", "Zoe"]);
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["kind"], "invalid_username", "{e}");
    assert!(e["message"].as_str().unwrap().contains("lowercase"), "{e}");
    // A username and --from-file together are refused by the argument parser.
    let o = cli(&stack, &["user", "create", "bob", "--from-file", "x.csv"]);
    assert!(!o.status.success());
}

/// Whether the dev Forge has an account `name` (`GET /api/v1/users/{name}` as admin: 200 or
/// 404), over a plain HTTP/1.1 request (the CLI's test dependencies have no HTTP client).
async fn forge_has(stack: &Stack, name: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = stack
        .forge
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /api/v1/users/{name} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: token {}\r\nConnection: close\r\n\r\n",
        stack.forge.admin_token()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf);
    match head.split_whitespace().nth(1) {
        Some("200") => true,
        Some("404") => false,
        other => panic!("dev Forge answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_many_under_the_concurrency_limit_with_one_progress_view() {
    let stack = start().await;
    let _reaper = reaper(&stack);
    let c = stack.client();
    for name in ["ann", "ben", "cat", "dan"] {
        c.create_user(name, None, None).await.unwrap();
    }

    let o = cli(
        &stack,
        &["vm", "deploy", "--users", "ann, ben,cat,ann,nosuch,Bad"],
    );
    let (out, err) = text(&o);
    assert!(!o.status.success(), "two names were refused: {out}");
    assert!(err.contains("2 of 5 deploy(s)"), "{err}");
    // Without a terminal: a line per change, the overall line after each batch of changes.
    for name in ["ann", "ben", "cat"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.contains("succeeded") && l.contains("http")),
            "{name} never shown ready with its URL:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.contains("/12 ")),
            "{name}'s steps are not shown:\n{out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("nosuch") && l.contains("refused")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("Bad") && l.contains("lowercase")),
        "{out}"
    );
    let last = out.lines().last().unwrap();
    assert_eq!(
        last, "[####################] 5/5 ended: 3 ready, 2 refused; 0 running, 0 queued",
        "{out}"
    );

    // The server's limit held: never more than two jobs running at the same time.
    let jobs = c
        .list_jobs(&ListJobsParams {
            limit: Some(50),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.state == JobState::Succeeded));
    let spans: Vec<(i64, i64)> = jobs
        .iter()
        .map(|j| (j.started_at_ms.unwrap(), j.finished_at_ms.unwrap()))
        .collect();
    for (start, _) in &spans {
        let running = spans
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(running <= 2, "{running} jobs ran at once: {spans:?}");
    }

    // The invitation for a ready VM: the message on stdout (ready to paste), never the password;
    // the reminder on stderr. None for a user without a ready VM.
    let ann_url = c
        .get_vm(c.find_user("ann").await.unwrap().user_id)
        .await
        .unwrap()
        .vm
        .unwrap()
        .url
        .unwrap();
    let password = c
        .reveal_initial_password(c.find_user("ann").await.unwrap().user_id)
        .await
        .unwrap()
        .initial_password;
    let o = cli(&stack, &["vm", "invite", "ann"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("Hi ann,"), "{out}");
    assert!(out.contains(&format!("    {ann_url}\n")), "{out}");
    assert!(
        out.contains("Sign in with your Forge account: username ann"),
        "{out}"
    );
    assert!(!out.contains(&password) && !err.contains(&password));
    assert!(
        err.contains("deliberately not in this message") && err.contains("reveal-password ann"),
        "{err}"
    );
    let o = cli(&stack, &["--json", "vm", "invite", "ann"]);
    let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inv["url"], ann_url.as_str());
    let o = cli(&stack, &["vm", "invite", "dan"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("dan has no VM yet"), "{err}");

    // --all-without-vm: only dan is left without a VM.
    let o = cli(&stack, &["--json", "vm", "deploy", "--all-without-vm"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["username"], "dan");
    assert_eq!(rows[0]["state"], "succeeded");
    let o = cli(&stack, &["vm", "deploy", "--all-without-vm"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("nothing to deploy"), "{out}");

    // Ctrl-C while following many deploys detaches, as `job follow` does: exit 130, "detached", no failure
    // reported; the jobs go on on the server and succeed.
    for name in ["eve", "fay"] {
        c.create_user(name, None, None).await.unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .arg("--server")
        .arg(format!("unix:{}", stack.server.socket.display()))
        .args(["vm", "deploy", "--users", "eve,fay"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
        lines.read_line(&mut first).unwrap();
        support::signal(child.id(), "INT");
        let status = support::wait_exit(&mut child, std::time::Duration::from_secs(30));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(130), "{first}\n{err}");
        assert!(
            err.contains("detached") && !err.contains("did not succeed"),
            "{err}"
        );
    }
    for name in ["eve", "fay"] {
        let id = c.find_user(name).await.unwrap().user_id;
        let job = c
            .call::<hero_os_tfgrid_deployer_sdk::methods::ListJobs>(&ListJobsParams {
                user_id: Some(id),
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs
            .remove(0);
        let job = c.follow_job(job.job_id, |_| {}).await.unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{name}: {:?}", job.error);
    }

    // Neither a user nor a list: the argument parser says so.
    let o = cli(&stack, &["vm", "deploy"]);
    assert!(!o.status.success());
    let o = cli(&stack, &["vm", "deploy", "ann", "--users", "ben"]);
    assert!(!o.status.success());
}

/// A batch line that fails *after* Forge made the account (here the token mint, refused for a scope Forge does
/// not know) keeps its record and the password that opens the account; before, the line said "nothing was kept"
/// and threw the password away, leaving an account on Forge nobody could open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_refused_after_forge_made_the_account_keeps_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deployer.toml");
    std::fs::write(
        &config,
        format!("{CONFIG}\n[forge]\nuser_token_scopes = [\"bogus:scope\"]\n"),
    )
    .unwrap();
    let forge = DevForge::start(dir.path());
    let server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: forge.url.clone(),
            extra_env: vec![("HERO_DEPLOYER_CONFIG".into(), config.display().to_string())],
        },
    );
    server.set_admin_token(&forge.admin_token()).await;
    let stack = Stack {
        _dir: dir,
        forge,
        server,
    };
    let file = stack._dir.path().join("people.csv");
    std::fs::write(&file, "username\nerin\n").unwrap();
    let o = cli(
        &stack,
        &["user", "create", "--from-file", file.to_str().unwrap()],
    );
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    let line = result_of(&out, 2);
    assert!(line.contains("Forge has the account"), "{line}");
    assert!(!line.contains("nothing was kept"), "{line}");

    let c = stack.client();
    let erin = c.find_user("erin").await.unwrap();
    assert!(
        !erin.setup_complete && erin.initial_password_held,
        "{erin:?}"
    );
    let password = c
        .reveal_initial_password(erin.user_id)
        .await
        .unwrap()
        .initial_password;
    let me = reqwest::Client::new()
        .get(format!("{}/api/v1/user", stack.forge.url))
        .basic_auth("erin", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "the kept password opens the account");
}
