//! Batches for an event or a class: `user create --from-file people.csv` and
//! `vm deploy --users a,b,c` / `--all-without-vm`. Built on the same SDK calls as the single
//! commands (no batch RPC): the server already bounds how many jobs run at once
//! (`provision.max_concurrent_jobs`, the rest wait `queued`), and `create_user` is resumable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hero_os_tfgrid_deployer_sdk::jobs::ProvisionOptions;
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::{CreateUserParams, ListUsersParams, User, VmStatus};
use hero_os_tfgrid_deployer_sdk::{username, Client, ClientError, ErrorKind};
use serde::Serialize;

use crate::output::{self, CliError, Output};
use crate::people_csv::{self, BadLine, Person};
use crate::progress::{self, Row};

/// How many `create_user` calls are in flight at once (each is a few Forge round trips).
pub const CREATE_PARALLEL: usize = 4;

/// Every user, all pages.
pub async fn all_users(client: &Client) -> anyhow::Result<Vec<User>> {
    let mut params = ListUsersParams {
        filter: None,
        cursor: None,
        limit: Some(500),
        before: None,
        expires_before: None,
    };
    let mut users = Vec::new();
    loop {
        let page = client.list_users(&params).await?;
        users.extend(page.users);
        match page.next_cursor {
            Some(c) => params.cursor = Some(c),
            None => return Ok(users),
        }
    }
}

#[derive(Debug, Serialize)]
struct Created {
    line: u64,
    username: String,
    user_id: i64,
    /// The Forge account existed and was adopted: its password is not known.
    adopted: bool,
    /// An earlier, unfinished `user create` of this user was finished.
    resumed: bool,
}

#[derive(Debug, Serialize)]
struct Skipped {
    line: u64,
    username: String,
    reason: String,
}

#[derive(Debug, Default, Serialize)]
struct BatchReport {
    created: Vec<Created>,
    skipped: Vec<Skipped>,
    refused: Vec<BadLine>,
}

enum Outcome {
    Created(Created),
    Refused(BadLine),
}

/// `user create --from-file FILE [--test-user]`.
pub async fn create_from_file(
    path: &Path,
    test_user: bool,
    client: &Client,
    out: &Output,
) -> anyhow::Result<()> {
    // At most one byte past the bound is read, so `parse` can refuse a file that is too big without this
    // reading all of it first (a huge file, or /dev/zero, took the memory or never ended).
    let mut bytes = Vec::new();
    {
        use std::io::Read;
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(people_csv::MAX_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    let parsed =
        people_csv::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let existing: HashMap<String, User> = all_users(client)
        .await?
        .into_iter()
        .map(|u| (u.forge_username.clone(), u))
        .collect();

    let mut report = BatchReport {
        refused: parsed.bad,
        ..Default::default()
    };
    let mut todo = Vec::new();
    for person in parsed.people {
        // The rule of a single `user create`: a throw-away test name takes `--test-user`, or a line of a
        // people file hands someone an account the test tooling may delete.
        if username::is_test_user(&person.username) && !test_user {
            report.refused.push(BadLine {
                line: person.line,
                username: Some(person.username.clone()),
                reason: format!(
                    "starts with {}, the prefix of throw-away end-to-end test users; pass --test-user if that is what you want",
                    username::TEST_PREFIX
                ),
            });
            continue;
        }
        match existing.get(&person.username) {
            Some(u) if u.setup_complete => report.skipped.push(Skipped {
                line: person.line,
                username: person.username,
                reason: format!("already a user (id {})", u.user_id),
            }),
            // Pending from an earlier run: create_user resumes it.
            other => {
                let resuming = other.is_some();
                todo.push((person, resuming));
            }
        }
    }

    let limit = Arc::new(tokio::sync::Semaphore::new(CREATE_PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for (person, resuming) in todo {
        let client = client.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            create_one(&client, person, resuming).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done.context("a create task failed")? {
            Outcome::Created(c) => report.created.push(c),
            Outcome::Refused(b) => report.refused.push(b),
        }
    }
    report.created.sort_by_key(|c| c.line);
    report.skipped.sort_by_key(|s| s.line);
    report.refused.sort_by_key(|b| b.line);

    let failure = (!report.refused.is_empty()).then(|| {
        CliError::new(
            "lines_refused",
            format!(
                "{} line(s) of {} refused (listed above with the reason); fix them and run the same command again: created users are skipped",
                report.refused.len(),
                path.display()
            ),
        )
    });
    out.show_then_fail(&report, |r| {
        let mut rows: Vec<(u64, Vec<String>)> = Vec::new();
        for c in &r.created {
            let what = match (c.adopted, c.resumed) {
                (true, _) => "created (existing Forge account adopted; password not known)",
                (false, true) => "created (finished an earlier attempt)",
                (false, false) => "created",
            };
            rows.push((
                c.line,
                vec![c.line.to_string(), c.username.clone(), what.to_owned()],
            ));
        }
        for s in &r.skipped {
            rows.push((
                s.line,
                vec![
                    s.line.to_string(),
                    s.username.clone(),
                    format!("skipped: {}", s.reason),
                ],
            ));
        }
        for b in &r.refused {
            rows.push((
                b.line,
                vec![
                    b.line.to_string(),
                    b.username.clone().unwrap_or_default(),
                    format!("refused: {}", b.reason),
                ],
            ));
        }
        rows.sort_by_key(|(line, _)| *line);
        let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
        output::table(&["line", "username", "result"], &rows);
        println!(
            "\n{} created, {} skipped, {} refused",
            r.created.len(),
            r.skipped.len(),
            r.refused.len()
        );
        if !r.created.is_empty() {
            println!(
                "Initial passwords are held by the deployer and not printed here: show one with \
                 `hero_os_tfgrid_deployer user reveal-password <username>` and deliver it out of band."
            );
        }
    }, failure)
}

/// Kinds of refusal that happen before the server writes anything (nothing to roll back).
fn refused_before_any_write(e: &ClientError) -> bool {
    matches!(
        e.kind(),
        Some(ErrorKind::InvalidParams | ErrorKind::InvalidUsername | ErrorKind::AlreadyExists)
    )
}

/// Worth one more try: `create_user` resumes where the last attempt stopped.
fn transient(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport { .. }) || e.kind() == Some(ErrorKind::ForgeUnavailable)
}

/// Creates one person; a refused line leaves nothing this call made. A failed `create_user`
/// keeps its `pending` record for a repeat call to resume — right for one user typed by hand,
/// but a batch line must end created or absent, so the line asks the server to remove the record
/// it made when Forge refused the account before any existed (`discard_if_refused`, an email taken
/// on Forge, …). The server does that under the name's claim: done here as a find and then a
/// delete, another operator's create of the same name could resume the record in between and lose
/// its only password to the delete. A record whose Forge account exists (a token mint refused
/// afterwards) is kept: its password is the only one that opens the account. When Forge stayed
/// unreachable through a retry the record is kept too, and the line says so: a timed-out account
/// creation may have happened on Forge, and only the held password lets a rerun finish it.
async fn create_one(client: &Client, p: Person, resuming: bool) -> Outcome {
    let params = CreateUserParams {
        username: p.username.clone(),
        display_name: p.display_name.clone(),
        email: p.email.clone(),
        discard_if_refused: true,
    };
    let call = || client.call::<methods::CreateUser>(&params);
    let mut result = call().await;
    if matches!(&result, Err(e) if transient(e)) {
        result = call().await;
    }
    let error = match result {
        Ok(r) => {
            return Outcome::Created(Created {
                line: p.line,
                username: p.username,
                user_id: r.user_id,
                adopted: r.adopted,
                resumed: resuming,
            })
        }
        Err(e) => e,
    };
    let mut reason = describe(&error);
    if transient(&error) {
        reason.push_str(
            "; its record stays pending so that running the same command again finishes it",
        );
    } else if !refused_before_any_write(&error) {
        // Only read, to say what is left: the server already decided, under the claim.
        match client.find_user(&p.username).await {
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => reason.push_str("; nothing was kept"),
            Ok(u) if !u.setup_complete && u.forge_user_id != 0 => reason.push_str(&format!(
                "; Forge has the account, so its record and password are kept (pending): run the same command again to finish, or `user delete {}`",
                p.username
            )),
            Ok(u) if !u.setup_complete => reason.push_str(&format!(
                "; {} record stays pending: run the same command again to finish, or `user delete {}`",
                if resuming { "the earlier attempt's" } else { "its" },
                p.username
            )),
            Ok(_) => {}
            Err(e) => reason.push_str(&format!(
                "; could not check for an unfinished record ({})",
                describe(&e)
            )),
        }
    }
    Outcome::Refused(BadLine {
        line: p.line,
        username: Some(p.username),
        reason,
    })
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Rpc(rpc) => match rpc.kind() {
            Some(kind) => format!("{} [{kind}]", rpc.message),
            None => rpc.message.clone(),
        },
        other => other.to_string(),
    }
}

/// Whom `vm deploy` applies to.
pub enum Targets {
    Named(String),
    AllWithoutVm,
}

/// `vm deploy --users a,b,c` / `--all-without-vm`: one job per user, all submitted at once (the
/// server runs at most `provision.max_concurrent_jobs` of them; the rest wait `queued`), then
/// one combined progress view until every job ended.
pub async fn deploy_many(
    targets: Targets,
    options: Option<ProvisionOptions>,
    client: &Client,
    out: &Output,
) -> anyhow::Result<()> {
    let mut rows: Vec<Row> = Vec::new();
    let users: Vec<User> = match targets {
        Targets::Named(list) => {
            let mut seen = std::collections::HashSet::new();
            let mut users = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !seen.insert(name.to_owned()) {
                    continue;
                }
                let refused = |reason: String| Row {
                    username: name.to_owned(),
                    job_id: None,
                    state: "refused".into(),
                    step: None,
                    detail: Some(reason),
                };
                if let Err(e) = username::validate(name) {
                    rows.push(refused(e.to_string()));
                    continue;
                }
                match client.find_user(name).await {
                    Ok(u) => users.push(u),
                    Err(e) => rows.push(refused(describe(&e))),
                }
            }
            if users.is_empty() && rows.is_empty() {
                anyhow::bail!("--users names nobody: give usernames separated by commas");
            }
            users
        }
        Targets::AllWithoutVm => all_users(client)
            .await?
            .into_iter()
            .filter(|u| {
                u.setup_complete && matches!(u.vm_status, VmStatus::NoVm | VmStatus::Decommissioned)
            })
            .collect(),
    };
    if users.is_empty() && rows.is_empty() {
        out.show(&rows, |_| {
            println!(
                "every user with a finished setup already has a VM (or a job): nothing to deploy"
            )
        });
        return Ok(());
    }
    for u in users {
        let row = match client.provision_vm(u.user_id, options.clone()).await {
            Ok(job) => Row {
                username: u.forge_username,
                job_id: Some(job.job_id),
                state: crate::cmd_job::state(job.state).to_owned(),
                step: None,
                detail: None,
            },
            Err(e) => Row {
                username: u.forge_username,
                job_id: None,
                state: "refused".into(),
                step: None,
                detail: Some(describe(&e)),
            },
        };
        rows.push(row);
    }
    rows.sort_by(|a, b| a.username.cmp(&b.username));
    let rows = if out.json {
        follow_quietly(client, rows).await
    } else {
        let (rows, detached) = progress::follow_all(client, rows).await;
        if detached {
            // As a single `job follow` does: the operator chose to stop watching; that is no failure, and
            // the shell's code for Ctrl-C says so (follow_all printed where the jobs are).
            std::process::exit(130);
        }
        rows
    };
    let bad = rows.iter().filter(|r| r.state != "succeeded").count();
    let failure = (bad > 0).then(|| {
        CliError::new(
            "deploys_failed",
            format!(
                "{bad} of {} deploy(s) did not succeed (see above); retry a failed one with `hero_os_tfgrid_deployer job retry <job>`",
                rows.len()
            ),
        )
    });
    out.show_then_fail(&rows, |_| {}, failure)
}

/// For `--json`: the same following, without the live view on stdout.
async fn follow_quietly(client: &Client, mut rows: Vec<Row>) -> Vec<Row> {
    for row in rows.iter_mut() {
        let Some(job_id) = row.job_id else { continue };
        match client.follow_job(job_id, |_| {}).await {
            Ok(job) => {
                row.state = crate::cmd_job::state(job.state).to_owned();
                row.detail = match job.result {
                    Some(r) => Some(r.url),
                    None => job.error,
                };
            }
            Err(e) => {
                row.state = "failed".into();
                row.detail = Some(format!("lost track of the job: {}", describe(&e)));
            }
        }
    }
    rows
}
