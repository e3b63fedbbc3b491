//! The cockpit's own request log: one JSON line per request that reached it (method, path, the
//! verified user or `null`, status). Never headers, tokens or query strings. File mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub user: Option<String>,
    pub status: u16,
}

/// The append-only log file.
pub struct RequestLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl RequestLog {
    /// Opens (creating, 0600) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<RequestLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(RequestLog {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends one line; a write failure is logged, never fails the request.
    pub fn append(&self, r: &LoggedRequest) {
        let Ok(mut line) = serde_json::to_string(r) else {
            return;
        };
        line.push('\n');
        let mut f = match self.file.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot write the request log");
        }
    }

    /// Reads a log back (for tests and operators).
    pub fn read(path: &Path) -> std::io::Result<Vec<LoggedRequest>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}
