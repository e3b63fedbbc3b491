//! Output: human tables by default, JSON with `--json`, one-line errors with a non-zero exit.

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
                Err(e) => fail(&format!("cannot encode output: {e}")),
            }
        } else {
            human(value);
        }
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

/// Key/value lines.
pub fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:<w$}  {v}");
    }
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

/// One line for an error, with the stable kind when the server gave one.
pub fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Rpc(rpc)) => match rpc.kind() {
            Some(kind) => format!("{} [{kind}]", rpc.message),
            None => rpc.message.clone(),
        },
        Some(ClientError::Transport { endpoint, reason }) => format!(
            "cannot reach the deployer server at {endpoint} ({reason}); is it running? Start it with `hero_os_tfgrid_deployer server start`"
        ),
        _ => format!("{e:#}"),
    }
}

pub fn fail(message: &str) -> ! {
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
}
