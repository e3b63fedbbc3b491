//! Output: human tables by default, JSON with `--json`, one-line errors with a non-zero exit.
//!
//! With `--json`, stdout carries JSON and nothing else, errors included: a failure prints
//! `{"kind": …, "message": …}` (plus `detail` when the server sent one) so a script never has to
//! parse stderr. The same one-line reason also goes to stderr for the person watching.

use std::io::{BufRead, IsTerminal, Write};

use hero_os_tfgrid_deployer_sdk::ClientError;
use serde::Serialize;

pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON, or runs `human` to print it for people.
    pub fn show<T: Serialize>(&self, value: &T, human: impl FnOnce(&T)) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => println!("{s}"),
                Err(e) => fail(
                    self,
                    &CliError::new("internal", format!("cannot encode output: {e}")).into(),
                ),
            }
        } else {
            human(value);
        }
    }

    /// [`Output::show`], then `failure` if there is one. With `--json` that is one document: the error, whose
    /// `detail` is `value`. Why: showing the value and then failing printed two JSON documents on stdout (the
    /// job, then the error), which no JSON reader of the output takes.
    pub fn show_then_fail<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce(&T),
        failure: Option<CliError>,
    ) -> anyhow::Result<()> {
        match failure {
            None => {
                self.show(value, human);
                Ok(())
            }
            Some(e) if self.json => Err(e
                .with_detail(serde_json::to_value(value).unwrap_or_default())
                .into()),
            Some(e) => {
                human(value);
                Err(e.into())
            }
        }
    }
}

/// An error of the CLI itself (not of the server), with a stable kind for `--json`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub kind: &'static str,
    pub message: String,
    /// Shown as the JSON error's `detail` (what the command had got to, e.g. the failed job).
    pub detail: Option<serde_json::Value>,
}

impl CliError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> CliError {
        self.detail = Some(detail);
        self
    }
}

/// The one rule for every destructive command: `--yes`/`-y` skips the question; otherwise ask on
/// the terminal, and refuse when there is none (a script must say `--yes`, never hang or guess).
/// The question goes to stderr so stdout stays clean for `--json`.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(
            "confirmation_required",
            format!("{question} Refusing without a terminal; pass --yes (-y) to confirm"),
        )
        .into());
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::new("io", format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::new("cancelled", "cancelled; nothing was changed").into())
    }
}

/// A left-aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Key/value lines, values aligned in one column.
pub fn fields(pairs: &[(&str, String)]) {
    print!("{}", fields_text(pairs, ""));
}

/// Key/value lines as text, each line starting with `indent`.
pub fn fields_text(pairs: &[(&str, String)], indent: &str) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for (k, v) in pairs {
        s.push_str(&format!("{indent}{k:<w$}  {v}\n"));
    }
    s
}

/// The paging hint printed under every listing that pages, so the next page is one copy away.
pub fn more(flag: &str, value: impl std::fmt::Display) {
    println!("more: {flag} {value}");
}

/// A VM's health in one cell: `healthy`, `down since <time>`, or `-` (not probed yet).
pub fn health(h: Option<&hero_os_tfgrid_deployer_sdk::jobs::VmHealth>) -> String {
    use hero_os_tfgrid_deployer_sdk::jobs::HealthState;
    match h {
        None => "-".into(),
        Some(h) if h.state == HealthState::Healthy => "healthy".into(),
        Some(h) => format!("down since {}", time(h.since)),
    }
}

/// A VM's expiry in one cell: the time, or `never`.
pub fn expiry(at: Option<i64>) -> String {
    at.map(time).unwrap_or_else(|| "never".into())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant), valid for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The stable kind of an error: the server's `data.kind`, or the CLI's own.
pub fn kind_of(e: &anyhow::Error) -> String {
    if let Some(c) = e.downcast_ref::<CliError>() {
        return c.kind.to_owned();
    }
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Rpc(rpc)) => rpc
            .kind()
            .map(|k| k.as_str().to_owned())
            .unwrap_or_else(|| "rpc".into()),
        Some(ClientError::Transport { .. }) => "unreachable".into(),
        Some(ClientError::Protocol(_)) => "protocol".into(),
        None => "error".into(),
    }
}

/// One line for an error, with the stable kind when the server gave one.
pub fn describe(e: &anyhow::Error) -> String {
    let line = match e.downcast_ref::<ClientError>() {
        Some(ClientError::Rpc(rpc)) => match rpc.kind() {
            Some(kind) => format!("{} [{kind}]", rpc.message),
            None => rpc.message.clone(),
        },
        Some(ClientError::Transport { endpoint, reason }) => format!(
            "cannot reach the deployer server at {endpoint} ({reason}); is it running? Start it with `hero_os_tfgrid_deployer server start`"
        ),
        _ => format!("{e:#}"),
    };
    // One line, always: a multi-line cause (a server's text, an OS message) is folded.
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reports `e` (JSON on stdout with `--json`, one line on stderr always) and exits 1.
pub fn fail(out: &Output, e: &anyhow::Error) -> ! {
    let message = describe(e);
    if out.json {
        let mut v = serde_json::json!({ "kind": kind_of(e), "message": message });
        let detail = e
            .downcast_ref::<CliError>()
            .and_then(|c| c.detail.clone())
            .or_else(|| {
                e.downcast_ref::<ClientError>()
                    .and_then(|c| match c {
                        ClientError::Rpc(rpc) => rpc.data.as_ref(),
                        _ => None,
                    })
                    .and_then(|d| d.detail.clone())
            });
        if let Some(detail) = detail {
            v["detail"] = detail;
        }
        println!("{v:#}");
    }
    eprintln!("error: {message}");
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1795305600), "2026-11-22 00:00:00 UTC");
        assert_eq!(time(1795305600 + 86_399), "2026-11-22 23:59:59 UTC");
    }

    #[test]
    fn errors_are_one_line_with_a_kind() {
        let e: anyhow::Error = CliError::new("confirmation_required", "no\nterminal").into();
        assert_eq!(describe(&e), "no terminal");
        assert_eq!(kind_of(&e), "confirmation_required");
        let e: anyhow::Error = ClientError::Transport {
            endpoint: "unix:/x".into(),
            reason: "gone".into(),
        }
        .into();
        assert_eq!(kind_of(&e), "unreachable");
    }
}
