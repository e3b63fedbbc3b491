//! The local backend's sshd watch: a sandbox whose sshd dies is noticed and its sshd restarted on
//! the same port, while the sandbox exists.
//!
//! Without it, `wait_ssh` asks the backend once per step attempt (`get_vm` restarts a dead sshd)
//! and then polls the port until the step deadline: an sshd that dies during that wait (killed,
//! crashed mid-handshake) leaves the step polling a dead port for ten minutes. A grid VM's sshd is
//! restarted by its init; this is the sandbox's stand-in for that init.
//!
//! One task per watched sandbox, holding only a weak reference to the watch: it ends when the
//! backend is dropped (sandboxes outlive the deployer, their sshd too) or the sandbox record is
//! gone (`delete_vm`). A restart takes the sandbox's lock, like every other change to it, and
//! looks again under it, so it never races `delete_vm` or `ensure_sshd`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::sshd::{self, SshdFiles};

/// Per-sandbox locks, shared with the backend.
pub(crate) type NameLocks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// How often a watched sandbox's sshd is looked at (a pid file read and a /proc lookup).
const INTERVAL: Duration = Duration::from_millis(250);

pub(crate) struct SshdWatch {
    inner: Arc<Inner>,
}

struct Inner {
    sshd_bin: PathBuf,
    start_timeout: Duration,
    locks: NameLocks,
    /// Watched sandboxes → the port their sshd must listen on.
    watched: Mutex<HashMap<String, u16>>,
    /// Sandboxes whose sshd was stopped on purpose (test hook): not restarted until
    /// `ensure_sshd` runs for them again.
    held_down: Mutex<HashSet<String>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SshdWatch {
    pub(crate) fn new(sshd_bin: PathBuf, start_timeout: Duration, locks: NameLocks) -> Self {
        SshdWatch {
            inner: Arc::new(Inner {
                sshd_bin,
                start_timeout,
                locks,
                watched: Mutex::new(HashMap::new()),
                held_down: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Watches the sandbox in `dir` (once per name; a later call updates the port) and lifts
    /// a hold. Called when its sshd runs.
    pub(crate) fn watch(&self, name: &str, dir: PathBuf, port: u16) {
        locked(&self.inner.held_down).remove(name);
        let new = locked(&self.inner.watched)
            .insert(name.to_owned(), port)
            .is_none();
        if new {
            tokio::spawn(watch_loop(
                Arc::downgrade(&self.inner),
                name.to_owned(),
                dir,
            ));
        }
    }

    /// Leaves the sandbox's sshd down until the next `watch` (test hook `stop_sshd`).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn hold_down(&self, name: &str) {
        locked(&self.inner.held_down).insert(name.to_owned());
    }
}

async fn watch_loop(watch: Weak<Inner>, name: String, dir: PathBuf) {
    let files = SshdFiles::new(dir.join("sshd"));
    let record = dir.join("sandbox.json");
    loop {
        tokio::time::sleep(INTERVAL).await;
        let Some(inner) = watch.upgrade() else {
            return;
        };
        let down =
            |inner: &Inner| !locked(&inner.held_down).contains(&name) && files.live_pid().is_none();
        if !record.exists() {
            locked(&inner.watched).remove(&name);
            return;
        }
        if !down(&inner) {
            continue;
        }
        let lock = locked(&inner.locks)
            .entry(name.clone())
            .or_default()
            .clone();
        let _held = lock.lock().await;
        if !record.exists() {
            locked(&inner.watched).remove(&name);
            return;
        }
        if !down(&inner) {
            continue;
        }
        let Some(port) = locked(&inner.watched).get(&name).copied() else {
            return;
        };
        match sshd::start(&inner.sshd_bin, &files, port, inner.start_timeout).await {
            // Deleted meanwhile by another process's backend (whose lock is not ours): undo.
            Ok(pid) if !record.exists() => {
                crate::process::kill_pid(pid, Duration::from_secs(2)).await;
                locked(&inner.watched).remove(&name);
                return;
            }
            Ok(pid) => {
                tracing::warn!(sandbox = %name, pid, port, "sandbox sshd had died; restarted")
            }
            Err(e) => tracing::warn!(sandbox = %name, port, error = %e,
                "sandbox sshd is down and did not restart; trying again"),
        }
    }
}
