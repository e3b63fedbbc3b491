//! One combined progress view for many jobs: a line per user and an overall bar.
//!
//! Every job is followed by its own long-poll (`Client::follow_job`, replayed from the start, so
//! nothing is missed); the followers only update a shared table, and one printer shows it. On a
//! terminal the table is redrawn in place a few times a second; otherwise (a log, a pipe, CI)
//! each change of a user's step or state is one line, so the record is readable afterwards.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::jobs::{Job, JobEvent, JobId, JobState};
use hero_os_tfgrid_deployer_sdk::Client;

/// Where one user stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub username: String,
    pub job_id: Option<JobId>,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`, or `refused` (never started).
    pub state: String,
    /// `3/10 select_node`, while running.
    pub step: Option<String>,
    /// The URL once ready, else the reason of a failure.
    pub detail: Option<String>,
}

impl Row {
    fn ended(&self) -> bool {
        matches!(
            self.state.as_str(),
            "succeeded" | "failed" | "cancelled" | "refused"
        )
    }
}

type Table = Arc<Mutex<Vec<Row>>>;

/// Follows `jobs` (and shows the `refused` rows beside them) until every job ended, or until
/// Ctrl-C, which detaches: the jobs go on on the server. Returns the final rows, and whether the
/// operator detached (then unfinished rows are not failures).
pub async fn follow_all(client: &Client, rows: Vec<Row>) -> (Vec<Row>, bool) {
    // Registered before anything is shown: a Ctrl-C the moment the table appears must detach, not
    // meet the default action and kill the CLI.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let table: Table = Arc::new(Mutex::new(rows));
    let live = std::io::stdout().is_terminal();
    let mut tasks = tokio::task::JoinSet::new();
    let jobs: Vec<(usize, JobId)> = snapshot(&table)
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.job_id.filter(|_| !r.ended()).map(|j| (i, j)))
        .collect();
    for (i, job_id) in jobs {
        let client = client.clone();
        let table = table.clone();
        tasks.spawn(async move {
            let t = table.clone();
            let result = client.follow_job(job_id, move |e| on_event(&t, i, e)).await;
            finish_row(&table, i, result);
        });
    }
    let mut printer = Printer::new(live);
    let mut detached = false;
    printer.show(&snapshot(&table));
    let mut tick = tokio::time::interval(Duration::from_millis(if live { 250 } else { 500 }));
    let interrupted = async {
        match sigint.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            done = tasks.join_next() => {
                if done.is_none() { break; }
            }
            _ = tick.tick() => printer.show(&snapshot(&table)),
            _ = &mut interrupted => {
                printer.show(&snapshot(&table));
                eprintln!("detached: the jobs go on on the server; see them with `hero_os_tfgrid_deployer job list`");
                tasks.abort_all();
                detached = true;
                break;
            }
        }
    }
    let rows = snapshot(&table);
    printer.show(&rows);
    (rows, detached)
}

fn snapshot(table: &Table) -> Vec<Row> {
    table.lock().map(|t| t.clone()).unwrap_or_default()
}

fn on_event(table: &Table, i: usize, e: &JobEvent) {
    let Ok(mut t) = table.lock() else { return };
    let Some(row) = t.get_mut(i) else { return };
    if let (Some(step), Some(index)) = (&e.step, e.step_index) {
        row.step = Some(format!("{index}/{} {step}", e.step_count));
        if row.state == "queued" {
            row.state = "running".into();
        }
    }
}

fn finish_row(
    table: &Table,
    i: usize,
    result: Result<Job, hero_os_tfgrid_deployer_sdk::ClientError>,
) {
    let Ok(mut t) = table.lock() else { return };
    let Some(row) = t.get_mut(i) else { return };
    match result {
        Ok(job) => {
            row.state = crate::cmd_job::state(job.state).to_owned();
            row.detail = match job.state {
                JobState::Succeeded => job.result.map(|r| r.url),
                _ => job.error,
            };
            if job.state == JobState::Succeeded {
                row.step = None;
            }
        }
        Err(e) => {
            row.state = "failed".into();
            row.detail = Some(format!("lost track of the job: {e}"));
        }
    }
}

/// The overall line: `[########------------] 12/30 ended: 10 ready, 2 failed; 4 running, 14 queued`.
pub fn overall(rows: &[Row]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(r.state.as_str()).or_default() += 1;
    }
    let n = |s: &str| counts.get(s).copied().unwrap_or(0);
    let ended = rows.iter().filter(|r| r.ended()).count();
    let width = 20;
    let filled = if rows.is_empty() {
        width
    } else {
        ended * width / rows.len()
    };
    let mut parts = vec![format!("{} ready", n("succeeded"))];
    for s in ["failed", "cancelled", "refused"] {
        if n(s) > 0 {
            parts.push(format!("{} {s}", n(s)));
        }
    }
    format!(
        "[{}{}] {ended}/{} ended: {}; {} running, {} queued",
        "#".repeat(filled),
        "-".repeat(width - filled),
        rows.len(),
        parts.join(", "),
        n("running") + n("cancelling"),
        n("queued"),
    )
}

fn line(r: &Row, name_width: usize) -> String {
    let mut s = format!("{:<name_width$}  {:<10}", r.username, r.state);
    if let Some(step) = &r.step {
        s.push_str(&format!("  {step}"));
    }
    if let Some(d) = &r.detail {
        s.push_str(&format!("  {d}"));
    }
    s.trim_end().to_owned()
}

struct Printer {
    live: bool,
    drawn: usize,
    last: Vec<String>,
}

impl Printer {
    fn new(live: bool) -> Printer {
        Printer {
            live,
            drawn: 0,
            last: Vec::new(),
        }
    }

    fn show(&mut self, rows: &[Row]) {
        let w = rows.iter().map(|r| r.username.len()).max().unwrap_or(0);
        let lines: Vec<String> = rows.iter().map(|r| line(r, w)).collect();
        let mut out = std::io::stdout().lock();
        if self.live {
            if lines == self.last && self.drawn > 0 {
                return;
            }
            // Up to the top of the last drawing, then each line cleared and rewritten.
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            for l in &lines {
                let _ = writeln!(out, "\r\x1b[2K{l}");
            }
            let _ = writeln!(out, "\r\x1b[2K{}", overall(rows));
            self.drawn = lines.len() + 1;
        } else {
            let first = self.last.is_empty();
            for (i, l) in lines.iter().enumerate() {
                if first || self.last.get(i) != Some(l) {
                    let _ = writeln!(out, "{l}");
                }
            }
            if first || lines != self.last {
                let _ = writeln!(out, "{}", overall(rows));
            }
        }
        let _ = out.flush();
        self.last = lines;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str) -> Row {
        Row {
            username: "u".into(),
            job_id: Some(1),
            state: state.into(),
            step: None,
            detail: None,
        }
    }

    #[test]
    fn overall_counts_every_state() {
        let rows: Vec<Row> = ["succeeded", "succeeded", "failed", "running", "queued"]
            .iter()
            .map(|s| row(s))
            .collect();
        assert_eq!(
            overall(&rows),
            "[############--------] 3/5 ended: 2 ready, 1 failed; 1 running, 1 queued"
        );
        assert_eq!(
            overall(&[]),
            "[####################] 0/0 ended: 0 ready; 0 running, 0 queued"
        );
    }
}
