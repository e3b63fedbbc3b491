//! WAL checkpoints off the write path.
//!
//! sqlite checkpoints by itself inside the commit that takes the WAL past 1000 pages — on our one
//! writer thread. That commit then took 6–20 ms instead of ~0.3 ms (it copies the WAL into the
//! database file and syncs it), and every write queued behind it waited: a hundred jobs each
//! waiting for their VM row, or a job's final state its follower is waiting for. So the writer's
//! connection turns that off (`wal_autocheckpoint = 0`) and this thread checkpoints instead, with
//! its own connection: once [`ENOUGH_COMMITS`] commits wait and the writer has been quiet for
//! [`QUIET`], or at the latest [`MAX_DEFER`] after the first commit it has not checkpointed (so
//! neither a steady load nor a trickle of writes leaves the WAL growing, and a trickle does not
//! pay a checkpoint per commit). Checkpoints are PASSIVE: they never wait for or block the
//! writer or a reader; pages a reader still needs are copied by a later round.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How long the writer must have committed nothing before a checkpoint starts.
pub const QUIET: Duration = Duration::from_millis(10);

/// Commits worth a checkpoint in the next quiet moment (sqlite's own threshold is 1000 WAL
/// pages; a commit writes a few pages to a few dozen).
pub const ENOUGH_COMMITS: u64 = 100;

/// Longest a commit waits to be checkpointed while writes keep coming.
pub const MAX_DEFER: Duration = Duration::from_secs(1);

/// The writer's side: tells the checkpointer about commits, stops it when the writer stops.
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Checkpoints done so far (for tests and diagnostics).
    done: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    commits: u64,
    /// `commits` as it was when the last checkpoint started.
    checkpointed: u64,
    stop: bool,
}

impl Checkpointer {
    /// Starts the checkpoint thread with `conn` (a read-write connection of the database).
    pub fn start(conn: Connection) -> std::io::Result<Checkpointer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            done: tokio::sync::watch::channel(0).0,
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || shared.run(&conn))?
        };
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// A transaction committed. Wakes the thread only for the first commit since a checkpoint
    /// and when enough are waiting (a lock and a counter otherwise: this runs on the writer
    /// thread after every commit).
    pub fn committed(&self) {
        let mut state = self.shared.lock();
        state.commits += 1;
        let waiting = state.commits - state.checkpointed;
        if waiting == 1 || waiting == ENOUGH_COMMITS {
            self.shared.wake.notify_one();
        }
    }

    /// Counts the checkpoints done; changes after each one.
    pub fn done(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.done.subscribe()
    }
}

impl Drop for Checkpointer {
    /// Stops the thread and waits for it, so its connection is closed when the writer's is.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self, conn: &Connection) {
        let mut state = self.lock();
        loop {
            while !state.stop && state.commits == state.checkpointed {
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.stop {
                return;
            }
            // Enough commits and a quiet moment, but not for ever.
            let latest = Instant::now() + MAX_DEFER;
            loop {
                let now = Instant::now();
                if now >= latest {
                    break;
                }
                let seen = state.commits;
                let enough = seen - state.checkpointed >= ENOUGH_COMMITS;
                let wait = if enough { QUIET } else { latest - now };
                state = self
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                if state.stop {
                    return;
                }
                if enough && state.commits == seen {
                    break;
                }
            }
            state.checkpointed = state.commits;
            drop(state);
            checkpoint(conn);
            self.done.send_modify(|n| *n += 1);
            state = self.lock();
        }
    }
}

fn checkpoint(conn: &Connection) {
    let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match outcome {
        Ok((wal_pages, copied)) if copied < wal_pages => {
            tracing::debug!(
                wal_pages,
                copied,
                "WAL checkpoint partial: a reader still uses the rest"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries"),
    }
}
