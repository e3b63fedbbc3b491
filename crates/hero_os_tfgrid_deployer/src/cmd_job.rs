//! `job list|show|follow|cancel|retry`, and the live progress display shared with `vm` and
//! `demo`: a one-line progress bar on a terminal, plain timestamped lines otherwise (logs, CI).

use std::io::{IsTerminal, Write};

use clap::Subcommand;
use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::UserId;
use hero_os_tfgrid_deployer_sdk::Client;

use crate::output::{self, CliError, Output};

#[derive(Subcommand)]
pub enum JobCmd {
    /// List jobs, newest first.
    List {
        /// Only this user's jobs (username or id).
        #[arg(long)]
        user: Option<String>,
        /// Only queued, running or cancelling jobs.
        #[arg(long)]
        active: bool,
        /// Page size (1..200).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only jobs older than this job id (printed as `more: --before …` under a page).
        #[arg(long)]
        before: Option<JobId>,
    },
    /// Show one job with its steps and timings.
    Show {
        /// The job's number (from `job list` or the line `vm deploy` printed).
        job_id: JobId,
    },
    /// Replay a job's events and follow it live until it ends (Ctrl-C detaches; the job runs on).
    Follow {
        /// The job's number.
        job_id: JobId,
    },
    /// Cancel an active job (a provision deletes what it made).
    Cancel {
        /// The job's number.
        job_id: JobId,
        /// Follow the clean-up live until the job ends.
        #[arg(long)]
        follow: bool,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Resume a failed job from its failed step.
    Retry {
        /// The job's number.
        job_id: JobId,
        /// Follow the job live until it ends.
        #[arg(long)]
        follow: bool,
    },
}

/// A username or a numeric user id ([`crate::cmd_user::resolve`]).
pub async fn resolve_user(client: &Client, user: &str) -> anyhow::Result<UserId> {
    Ok(crate::cmd_user::resolve(client, user).await?.user_id)
}

pub async fn run(cmd: JobCmd, client: &Client, out: &Output) -> anyhow::Result<()> {
    match cmd {
        JobCmd::List {
            user,
            active,
            limit,
            before,
        } => {
            let user_id = match user {
                Some(u) => Some(resolve_user(client, &u).await?),
                None => None,
            };
            let page = client
                .list_jobs(&ListJobsParams {
                    user_id,
                    active_only: active.then_some(true),
                    before,
                    limit: Some(limit),
                })
                .await?;
            out.show(&page, |page| {
                let rows: Vec<Vec<String>> = page
                    .jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.job_id.to_string(),
                            j.forge_username.clone(),
                            kind(j.kind).into(),
                            state(j.state).into(),
                            progress_of(j),
                            output::time(j.created_at_ms / 1000),
                            j.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(
                    &["job", "user", "kind", "state", "step", "created", "error"],
                    &rows,
                );
                if let Some(b) = page.next_before {
                    output::more("--before", b);
                }
            });
        }
        JobCmd::Show { job_id } => {
            let job = client.get_job(job_id).await?;
            out.show(&job, print_job);
        }
        JobCmd::Follow { job_id } => {
            let job = follow(client, job_id, out).await?;
            finish(&job, out)?;
        }
        JobCmd::Cancel {
            job_id,
            follow: f,
            yes,
        } => {
            let job = client.get_job(job_id).await?;
            if job.state.is_active() {
                output::confirm(
                    &format!(
                        "Cancel job {} ({} of {})? A provision deletes what it made so far.",
                        job.job_id,
                        kind(job.kind),
                        job.forge_username
                    ),
                    yes,
                )?;
            }
            let job = client.cancel_job(job_id).await?;
            if f {
                let job = follow(client, job.job_id, out).await?;
                out.show(&job, print_job);
            } else {
                out.show(&job, |j| {
                    println!("job {} is {}; the worker stops and cleans up (follow with `job follow {}`)", j.job_id, state(j.state), j.job_id)
                });
            }
        }
        JobCmd::Retry { job_id, follow: f } => {
            let job = client.retry_job(job_id).await?;
            if f {
                let job = follow(client, job.job_id, out).await?;
                finish(&job, out)?;
            } else {
                out.show(&job, |j| {
                    println!(
                        "job {} queued again; follow with `job follow {}`",
                        j.job_id, j.job_id
                    )
                });
            }
        }
    }
    Ok(())
}

pub fn kind(k: JobKind) -> &'static str {
    k.as_str()
}

pub fn state(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelling => "cancelling",
        JobState::Cancelled => "cancelled",
    }
}

/// `3/10 select_node`: the position of the step the job is in, as every other view numbers it
/// ("step 3/10"); a count of done steps read "2/10 select_node" for the same moment. A job
/// without a current step shows how many steps are done.
fn progress_of(j: &Job) -> String {
    let n = j.steps.len();
    let current = j
        .current_step
        .as_ref()
        .filter(|_| j.state != JobState::Succeeded)
        .and_then(|name| j.steps.iter().find(|s| &s.name == name));
    match current {
        Some(step) => format!("{}/{n} {}", step.index, step.name),
        None => {
            let done = j
                .steps
                .iter()
                .filter(|s| s.state == StepState::Done)
                .count();
            format!("{done}/{n}")
        }
    }
}

pub fn print_job(j: &Job) {
    output::fields(&[
        ("job", j.job_id.to_string()),
        ("user", format!("{} (id {})", j.forge_username, j.user_id)),
        ("kind", kind(j.kind).into()),
        ("state", state(j.state).into()),
        ("backend", j.backend.clone()),
        ("started by", j.actor.clone()),
        ("created", output::time(j.created_at_ms / 1000)),
        ("error", j.error.clone().unwrap_or_else(|| "-".into())),
        (
            "url",
            j.result
                .as_ref()
                .map(|r| r.url.clone())
                .unwrap_or_else(|| "-".into()),
        ),
    ]);
    println!();
    let rows: Vec<Vec<String>> = j
        .steps
        .iter()
        .map(|s| {
            vec![
                format!("{}/{}", s.index, j.steps.len()),
                s.name.clone(),
                format!("{:?}", s.state).to_lowercase(),
                s.attempts.to_string(),
                s.duration_ms
                    .map(|d| format!("{:.1} s", d as f64 / 1000.0))
                    .unwrap_or_default(),
                s.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        &["step", "name", "state", "attempts", "took", "message"],
        &rows,
    );
}

/// Prints the outcome of a followed job; a failed or cancelled job is an error (exit 1).
pub fn finish(job: &Job, out: &Output) -> anyhow::Result<()> {
    let failure = match job.state {
        JobState::Succeeded => None,
        s => Some(CliError::new(
            if s == JobState::Cancelled {
                "job_cancelled"
            } else {
                "job_failed"
            },
            format!(
                "job {} {}: {}{}",
                job.job_id,
                state(s),
                job.error.clone().unwrap_or_default(),
                if s == JobState::Failed {
                    format!(" (resume with `job retry {}`)", job.job_id)
                } else {
                    String::new()
                }
            ),
        )),
    };
    out.show_then_fail(
        job,
        |j| match (&j.state, &j.result) {
            (JobState::Succeeded, Some(r)) => {
                println!("job {} succeeded: {}", j.job_id, r.url);
            }
            (JobState::Succeeded, None) => println!("job {} succeeded", j.job_id),
            _ => {}
        },
        failure,
    )
}

/// Milliseconds since the Unix epoch, on this machine's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Live progress of one job on stderr.
struct Progress {
    tty: bool,
    /// When the job was created (server clock, ms): every line is stamped with its offset from
    /// here, so replayed events show when they happened, not when this follower read them.
    base_ms: i64,
    step: Option<(u32, u32, String)>,
    attempt: Option<u32>,
    drawn: bool,
}

impl Progress {
    fn new(base_ms: i64) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            base_ms,
            step: None,
            attempt: None,
            drawn: false,
        }
    }

    fn offset_s(&self, at_ms: i64) -> f64 {
        (at_ms - self.base_ms).max(0) as f64 / 1000.0
    }

    fn event(&mut self, e: &JobEvent) {
        if let (Some(i), Some(name)) = (e.step_index, e.step.as_ref()) {
            if self.step.as_ref().map(|s| s.0) != Some(i) {
                self.attempt = None;
            }
            self.step = Some((i, e.step_count, name.clone()));
        }
        if e.attempt.is_some() && e.level != EventLevel::Output {
            self.attempt = e.attempt;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            if self.drawn {
                let _ = write!(err, "\r\x1b[2K");
            }
            let prefix = match e.level {
                EventLevel::Output => "  | ",
                EventLevel::Warn => "  ! ",
                EventLevel::Error => "  x ",
                EventLevel::Info => "  ",
            };
            let _ = writeln!(err, "{prefix}{}", e.message);
            let _ = write!(err, "{}", self.bar());
            let _ = err.flush();
            self.drawn = true;
        } else {
            let _ = writeln!(
                err,
                "[{:>6.1}s] {}{}",
                self.offset_s(e.at_ms),
                if e.level == EventLevel::Output {
                    "| "
                } else {
                    ""
                },
                e.message
            );
        }
    }

    fn bar(&self) -> String {
        let (i, n, name) = self.step.clone().unwrap_or((0, 0, "waiting".into()));
        let width = 20usize;
        let filled = if n == 0 {
            0
        } else {
            (i.saturating_sub(1) as usize * width) / n as usize
        };
        format!(
            "[{}{}] step {i}/{n} {name}{} · {:.0} s",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.attempt
                .map(|a| format!(" · attempt {a}"))
                .unwrap_or_default(),
            self.offset_s(now_ms())
        )
    }

    fn done(&mut self) {
        if self.tty && self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

/// Follows a job: names it first, replays its events, then long-polls until it ends. With
/// `--json`, events are not drawn (the final job is printed by the caller). Ctrl-C detaches:
/// the job runs on in the server, and the last line says how to come back to it.
pub async fn follow(client: &Client, job_id: JobId, out: &Output) -> anyhow::Result<Job> {
    let job = client.get_job(job_id).await?;
    // Registered before the first line is printed: a Ctrl-C right after it must detach with
    // the message, not kill the process by the default action.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::new("io", format!("cannot watch for Ctrl-C: {e}")))?;
    if !out.json {
        eprintln!(
            "following job {} ({} of {}); Ctrl-C detaches, the job keeps running",
            job.job_id,
            kind(job.kind),
            job.forge_username
        );
    }
    let mut progress = Progress::new(job.created_at_ms);
    let tty = progress.tty;
    let watch = async {
        let mut after = 0;
        loop {
            let page = client.job_events(job_id, after, 1_000).await?;
            if !out.json {
                for e in &page.events {
                    progress.event(e);
                }
                if page.events.is_empty() && progress.tty {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{}", progress.bar());
                    let _ = err.flush();
                    progress.drawn = true;
                }
            }
            after = page.last_seq;
            if page.done {
                progress.done();
                return Ok::<Job, anyhow::Error>(client.get_job(job_id).await?);
            }
        }
    };
    tokio::select! {
        r = watch => r,
        _ = sigint.recv() => detached(job_id, tty, out),
    }
}

/// Ctrl-C while following: leave the job alone and say how to re-attach. Exit 130, the shell's
/// code for "stopped by SIGINT".
fn detached(job_id: JobId, tty: bool, out: &Output) -> ! {
    let message = format!(
        "detached from job {job_id}; it keeps running in the server. Re-attach with `hero_os_tfgrid_deployer job follow {job_id}`"
    );
    if out.json {
        println!(
            "{:#}",
            serde_json::json!({ "kind": "detached", "message": message, "job_id": job_id })
        );
    }
    let mut err = std::io::stderr().lock();
    if tty {
        let _ = write!(err, "\r\x1b[2K");
    }
    let _ = writeln!(err, "{message}");
    let _ = err.flush();
    std::process::exit(130)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(current: Option<&str>, done: usize, state: JobState) -> Job {
        let names = ["forge_user", "ssh_key", "select_node", "deploy_vm"];
        Job {
            job_id: 1,
            user_id: 1,
            forge_username: "alice".into(),
            kind: JobKind::Provision,
            state,
            backend: "local".into(),
            actor: "test".into(),
            steps: names
                .iter()
                .enumerate()
                .map(|(i, n)| StepRecord {
                    index: i as u32 + 1,
                    name: (*n).into(),
                    state: if i < done {
                        StepState::Done
                    } else if Some(*n) == current {
                        StepState::Running
                    } else {
                        StepState::Pending
                    },
                    attempts: 0,
                    started_at_ms: None,
                    finished_at_ms: None,
                    duration_ms: None,
                    message: None,
                })
                .collect(),
            current_step: current.map(Into::into),
            error: None,
            created_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            heartbeat_at_ms: None,
            result: None,
        }
    }

    #[test]
    fn progress_names_the_position_of_the_current_step() {
        // Two steps done, the third running: "step 3/4" everywhere else.
        assert_eq!(
            progress_of(&job(Some("select_node"), 2, JobState::Running)),
            "3/4 select_node"
        );
        assert_eq!(progress_of(&job(None, 0, JobState::Queued)), "0/4");
        assert_eq!(
            progress_of(&job(Some("deploy_vm"), 4, JobState::Succeeded)),
            "4/4"
        );
    }
}
