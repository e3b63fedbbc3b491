//! sqlite state: one writer, a small pool of readers, WAL mode, migrations embedded in the binary.
//!
//! **One writer.** Every write goes through [`Db::write`] to a single connection owned by a
//! dedicated thread. The thread takes every write queued since its last commit and runs them in
//! one transaction, each inside its own savepoint (a failing write rolls back only itself), then
//! commits once and only then answers the callers — group commit. Writers never wait on sqlite's
//! lock (no `SQLITE_BUSY` back-off sleeps) and a burst of N writes costs one commit, not N: this
//! is what keeps a hundred concurrent provisioning jobs cheap. A caller's write is visible to
//! every reader once its future resolves, exactly as with a per-call transaction.
//!
//! **Readers.** [`Db::call`] runs a closure on tokio's blocking pool with a pooled read-only
//! connection (`query_only`), so the async runtime never waits on disk and WAL lets reads run
//! beside the writer. The pool is bounded: at most [`MAX_READERS`] connections exist, so a burst
//! of reads queues instead of opening (and then closing) a connection per call.
//!
//! **Checkpoints** run on their own thread when the writer is quiet, never inside a commit (see
//! `checkpointer`).
//!
//! [`DataDirLock`] makes sure there is a single server, hence a single writer, per data dir.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::Connection;

mod checkpointer;
use checkpointer::Checkpointer;
mod claims;
pub use claims::Claim;

/// Embedded migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    ("0002_jobs", include_str!("../migrations/0002_jobs.sql")),
    (
        "0003_clustered_job_rows",
        include_str!("../migrations/0003_clustered_job_rows.sql"),
    ),
    (
        "0004_job_events_in_time_order",
        include_str!("../migrations/0004_job_events_in_time_order.sql"),
    ),
    (
        "0005_vm_health",
        include_str!("../migrations/0005_vm_health.sql"),
    ),
    (
        "0006_vm_expiry",
        include_str!("../migrations/0006_vm_expiry.sql"),
    ),
    (
        "0007_vm_profile",
        include_str!("../migrations/0007_vm_profile.sql"),
    ),
    (
        "0008_vm_backend_asked",
        include_str!("../migrations/0008_vm_backend_asked.sql"),
    ),
    (
        "0009_vm_admins_pushed",
        include_str!("../migrations/0009_vm_admins_pushed.sql"),
    ),
    (
        "0010_oauth_apps",
        include_str!("../migrations/0010_oauth_apps.sql"),
    ),
];

/// Read connections open at most (the machine this runs on has few cores; more would only
/// queue inside sqlite and the kernel).
pub const MAX_READERS: usize = 8;

/// Prepared statements kept per connection: more than the distinct SQL texts the server runs.
const STATEMENT_CACHE: usize = 128;

/// Writes committed together at most, so one huge burst cannot hold the write lock for long.
const MAX_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database schema version {found} is newer than this binary knows ({known}); upgrade the deployer")]
    TooNew { found: i64, known: i64 },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database write not committed: {0}")]
    Commit(String),
    #[error("database worker failed: {0}")]
    Worker(String),
}

impl DbError {
    /// The write failed because the disk (or the file system's quota) is full: sqlite's
    /// `SQLITE_FULL`, as an error code or, once the writer rolled a batch back, in its message.
    pub fn is_disk_full(&self) -> bool {
        const SQLITE_FULL_MESSAGE: &str = "database or disk is full";
        match self {
            DbError::Sql(e)
            | DbError::Open { source: e, .. }
            | DbError::Migration { source: e, .. } => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
                    || e.to_string().contains(SQLITE_FULL_MESSAGE)
            }
            DbError::Commit(why) | DbError::Worker(why) => why.contains(SQLITE_FULL_MESSAGE),
            DbError::TooNew { .. } => false,
        }
    }
}

/// Shared handle to the state database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    readers: Arc<tokio::sync::Semaphore>,
    /// The writer thread's queue; the thread ends when the last `Db` is dropped.
    writer: mpsc::Sender<WriteJob>,
    /// Counts the background WAL checkpoints (see `checkpointer`).
    checkpoints: tokio::sync::watch::Receiver<u64>,
    /// Keys held by one caller at a time (see `claims`).
    claims: claims::Claims,
}

/// One queued write: runs inside the batch's transaction (or gets the error that prevented
/// that) and returns the callback that answers the caller once the batch's fate is known.
type WriteJob = Box<dyn FnOnce(Result<&Connection, String>) -> Finish + Send>;

/// A write's outcome, held until the batch's fate is known.
struct Finish {
    ok: bool,
    answer: Answer,
}

/// Called with `None` when the batch committed, else with why it did not.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Writer,
    Reader,
    Checkpointer,
}

impl Db {
    /// Opens (creating if needed) the database, applies pending migrations and starts the writer.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Db::start(path.to_path_buf())
    }

    /// An in-memory database for unit tests: sqlite's `memdb` VFS, shared by every connection
    /// of this handle and gone with the last one.
    pub fn open_in_memory() -> Result<Db, DbError> {
        Db::start(PathBuf::from(format!(
            "file:/hero-deployer-{}?vfs=memdb",
            rand::random::<u64>()
        )))
    }

    fn start(path: PathBuf) -> Result<Db, DbError> {
        let mut writer = connect(&path, Role::Writer)?;
        migrate(&mut writer)?;
        let checkpointer =
            Checkpointer::start(connect(&path, Role::Checkpointer)?).map_err(|e| {
                DbError::Worker(format!("cannot start the sqlite checkpoint thread: {e}"))
            })?;
        let checkpoints = checkpointer.done();
        let (tx, rx) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer, rx, checkpointer))
            .map_err(|e| DbError::Worker(format!("cannot start the sqlite writer thread: {e}")))?;
        Ok(Db {
            inner: Arc::new(Inner {
                path,
                idle: Mutex::new(Vec::new()),
                readers: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
                writer: tx,
                checkpoints,
                claims: claims::Claims::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Counts the WAL checkpoints done in the background; changes after each one.
    pub fn checkpoints(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.checkpoints.clone()
    }

    /// Claims `key` on this database until the returned [`Claim`] drops, waiting at most
    /// `bound` while another caller holds it (`None` then). For read–act–write sequences that
    /// cross an outside call (see `claims`).
    pub async fn claim(&self, key: &str, bound: std::time::Duration) -> Option<Claim> {
        self.inner.claims.claim(key, bound).await
    }

    fn take(&self) -> Result<Connection, DbError> {
        let pooled = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        match pooled {
            Some(c) => Ok(c),
            None => connect(&self.inner.path, Role::Reader),
        }
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            idle.push(conn);
        }
    }

    /// Runs `f` with a read-only connection on the blocking pool. Writes fail here
    /// ("attempt to write a readonly database"): use [`Db::write`].
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let permit = self
            .inner
            .readers
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| E::from(DbError::Worker(e.to_string())))?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = db.take()?;
            let result = f(&mut conn);
            db.put(conn);
            result
        })
        .await
        .map_err(|e| E::from(DbError::Worker(e.to_string())))?
    }

    /// Runs `f` on the writer connection inside a transaction shared with the other writes
    /// queued at the same moment. `f` is atomic (its own savepoint: an `Err` undoes what it
    /// wrote) and serialized with every other write, so read-check-write inside `f` is safe.
    /// Resolves once the transaction committed; a failed commit turns an `Ok` into an error.
    ///
    /// The write is queued when `write` is called, not when the future is first polled: writes
    /// commit in the order they were asked for, even when a caller awaits them later.
    pub fn write<T, E, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.write_then(f, || {})
    }

    /// [`Db::write`], and `committed` runs on the writer thread as soon as the write committed
    /// (not when it failed), before the caller is answered: for notices that must follow the
    /// commit (waking a job's followers) without waking the caller's task to send them.
    pub fn write_then<T, E, F, C>(
        &self,
        f: F,
        committed: C,
    ) -> impl std::future::Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        C: FnOnce() + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: WriteJob = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => match std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
                    Ok(r) => r,
                    Err(_) => Err(E::from(DbError::Worker("a database write panicked".into()))),
                },
                Err(why) => Err(E::from(DbError::Commit(why))),
            };
            Finish {
                ok: result.is_ok(),
                answer: Box::new(move |commit_failed: Option<&str>| {
                    let result = match (result, commit_failed) {
                        (Ok(_), Some(why)) => Err(E::from(DbError::Commit(why.to_owned()))),
                        (r, _) => r,
                    };
                    if result.is_ok() {
                        committed();
                    }
                    let _ = tx.send(result);
                }),
            }
        });
        let sent = self.inner.writer.send(job).is_ok();
        async move {
            if !sent {
                return Err(E::from(DbError::Worker(
                    "the sqlite writer thread has stopped".into(),
                )));
            }
            rx.await.unwrap_or_else(|_| {
                Err(E::from(DbError::Worker(
                    "the sqlite writer thread stopped before answering".into(),
                )))
            })
        }
    }
}

fn connect(path: &Path, role: Role) -> Result<Connection, DbError> {
    let open = |source| DbError::Open {
        path: path.display().to_string(),
        source,
    };
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
    .map_err(open)?;
    match role {
        Role::Reader => conn.execute_batch("PRAGMA query_only = ON;"),
        // Every write runs in its own savepoint, whose journal sqlite otherwise spills to a
        // temporary file once it grows: keep it in memory. Checkpoints are not the writer's
        // business (see `checkpointer`).
        Role::Writer => {
            conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;")
        }
        Role::Checkpointer => Ok(()),
    }
    .map_err(open)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The writer thread: group commit of everything queued, until every `Db` handle is gone.
fn write_loop(conn: Connection, queue: mpsc::Receiver<WriteJob>, checkpointer: Checkpointer) {
    let (mut commits, mut writes) = (0u64, 0u64);
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run_sql(&conn, "BEGIN IMMEDIATE") {
            let why = format!("cannot begin a transaction: {e}");
            for job in batch {
                (job(Err(why.clone())).answer)(None);
            }
            continue;
        }
        commits += 1;
        writes += batch.len() as u64;
        let mut answers = Vec::with_capacity(batch.len());
        // Set when sqlite itself rolled the whole transaction back (disk full, I/O error):
        // nothing of this batch will be committed, so no later write may run in it either.
        let mut lost: Option<String> = None;
        for job in batch {
            if let Some(why) = &lost {
                answers.push(job(Err(why.clone())));
                continue;
            }
            if let Err(e) = run_sql(&conn, "SAVEPOINT write") {
                answers.push(job(Err(format!("cannot open a savepoint: {e}"))));
                continue;
            }
            let finish = job(Ok(&conn));
            let closed = if finish.ok {
                run_sql(&conn, "RELEASE write")
            } else {
                run_sql(&conn, "ROLLBACK TO write").and_then(|_| run_sql(&conn, "RELEASE write"))
            };
            if let Err(e) = closed {
                tracing::error!(error = %e, "sqlite savepoint could not be closed");
            }
            answers.push(finish);
            if conn.is_autocommit() {
                lost = Some("sqlite rolled the transaction back".into());
            }
        }
        let committed = match &lost {
            Some(why) => Err(why.clone()),
            None => run_sql(&conn, "COMMIT").map_err(|e| e.to_string()),
        };
        let failure = match committed {
            Ok(()) => {
                checkpointer.committed();
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite group commit failed; every write of the batch is reported failed");
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Some(e)
            }
        };
        for finish in answers {
            (finish.answer)(failure.as_deref());
        }
    }
    tracing::debug!(commits, writes, "sqlite writer stopped");
}

fn run_sql(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.execute_cached(sql, []).map(|_| ())
}

/// `execute` and `query_row` through the connection's prepared-statement cache. Parsing the
/// same SQL again on every call was a tenth of the orchestrator's database CPU.
pub trait Cached {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(DbError::TooNew {
            found: version,
            known,
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn
            .transaction()
            .map_err(|source| DbError::Migration { name, source })?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", index as i64 + 1))
            .and_then(|_| tx.commit())
            .map_err(|source| DbError::Migration { name, source })?;
        tracing::info!(migration = name, "applied database migration");
    }
    Ok(())
}

/// An exclusive lock on the data dir, held for the server's lifetime.
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock or explains who holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, String> {
        use fs4::fs_std::FileExt;
        use std::io::{Read, Seek, Write};
        let path = data_dir.join("server.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock_exclusive() {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(format!(
                    "another hero_os_tfgrid_deployer_server is already running on data dir {} ({}); stop it first (`hero_os_tfgrid_deployer server stop`) or set another data_dir (HERO_DEPLOYER_DATA_DIR)",
                    data_dir.display(),
                    if holder.is_empty() { "pid unknown".to_owned() } else { format!("pid {holder}") }
                ));
            }
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.sync_all();
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn migrations_apply_once_and_events_are_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = Db::open(&path).unwrap();
        drop(db);
        let _db = Db::open(&path).unwrap();
        let conn = connect(&path, Role::Writer).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute(
            "INSERT INTO events(at, actor, action, subject, outcome) VALUES (1,'a','b','c','ok')",
            [],
        )
        .unwrap();
        assert!(conn.execute("UPDATE events SET actor='x'", []).is_err());
        assert!(conn.execute("DELETE FROM events", []).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_beside_the_writer_not_in_its_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = Db::open(&path).unwrap();
        let mut checkpoints = db.checkpoints();
        let before = *checkpoints.borrow_and_update();
        let autocheckpoint = db
            .write(|c| -> Result<i64, DbError> {
                c.execute_batch("CREATE TABLE scratch(k INTEGER PRIMARY KEY, v BLOB NOT NULL)")?;
                Ok(c.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(
            autocheckpoint, 0,
            "the writer's commits must not checkpoint"
        );
        // Well past sqlite's own 1000-page threshold, in several commits.
        for chunk in 0..20 {
            db.write(move |c| -> Result<(), DbError> {
                for k in 0..50 {
                    c.execute(
                        "INSERT INTO scratch(k, v) VALUES (?1, zeroblob(16000))",
                        [chunk * 50 + k],
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), checkpoints.changed())
            .await
            .expect("a checkpoint once the writer went quiet")
            .unwrap();
        assert!(*checkpoints.borrow() > before);
        // The pages reached the database file itself, not only the WAL.
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 1000 * 16000, "database file is {size} bytes");
    }

    fn scratch_table(db: &Db) -> impl std::future::Future<Output = Result<(), DbError>> + '_ {
        db.write(|c| {
            c.execute_batch("CREATE TABLE scratch(k TEXT PRIMARY KEY, v INTEGER NOT NULL)")?;
            Ok(())
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_concurrent_writes_all_land_and_are_visible_once_answered() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        scratch_table(&db).await.unwrap();
        let writes = (0..300).map(|i| {
            let db = db.clone();
            async move {
                db.write(move |c| -> Result<(), DbError> {
                    c.execute(
                        "INSERT INTO scratch(k, v) VALUES (?1, ?2)",
                        rusqlite::params![format!("k{i}"), i],
                    )?;
                    Ok(())
                })
                .await?;
                // Answered means committed: a reader sees the row at once.
                db.call(move |c| -> Result<i64, DbError> {
                    Ok(c.query_row(
                        "SELECT v FROM scratch WHERE k = ?1",
                        [format!("k{i}")],
                        |r| r.get(0),
                    )?)
                })
                .await
            }
        });
        let seen = futures::future::join_all(writes).await;
        for (i, v) in seen.into_iter().enumerate() {
            assert_eq!(v.unwrap(), i as i64);
        }
    }

    #[tokio::test]
    async fn a_failing_write_rolls_back_only_itself() {
        let db = Db::open_in_memory().unwrap();
        scratch_table(&db).await.unwrap();
        let good = db.write(|c| -> Result<(), DbError> {
            c.execute("INSERT INTO scratch(k, v) VALUES ('good', 1)", [])?;
            Ok(())
        });
        let bad = db.write(|c| -> Result<(), DbError> {
            c.execute("INSERT INTO scratch(k, v) VALUES ('half', 2)", [])?;
            // Fails after a successful statement: the first insert must be undone too.
            c.execute("INSERT INTO scratch(k, v) VALUES ('good', 3)", [])?;
            Ok(())
        });
        let panicky = db.write(|c| -> Result<(), DbError> {
            c.execute("INSERT INTO scratch(k, v) VALUES ('panic', 4)", [])?;
            panic!("a bug in a write closure");
        });
        let (good, bad, panicky) = tokio::join!(good, bad, panicky);
        good.unwrap();
        assert!(matches!(bad, Err(DbError::Sql(_))), "{bad:?}");
        assert!(matches!(panicky, Err(DbError::Worker(_))), "{panicky:?}");
        let rows: Vec<(String, i64)> = db
            .call(|c| -> Result<_, DbError> {
                Ok(c.prepare("SELECT k, v FROM scratch ORDER BY k")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![("good".to_owned(), 1)]);
        // The writer survived the panic.
        db.write(|c| -> Result<(), DbError> {
            c.execute("INSERT INTO scratch(k, v) VALUES ('after', 5)", [])?;
            Ok(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn write_then_runs_its_hook_after_a_commit_and_never_for_a_failed_write() {
        let db = Db::open_in_memory().unwrap();
        scratch_table(&db).await.unwrap();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<&str>();
        let (tx_ok, tx_bad) = (seen_tx.clone(), seen_tx);
        let reader = db.clone();
        let ok = db.write_then(
            |c| -> Result<(), DbError> {
                c.execute("INSERT INTO scratch(k, v) VALUES ('a', 1)", [])?;
                Ok(())
            },
            move || {
                // Committed before the hook runs: a reader connection sees the row already.
                let visible: i64 = connect(reader.path(), Role::Reader)
                    .unwrap()
                    .query_row("SELECT count(*) FROM scratch WHERE k = 'a'", [], |r| {
                        r.get(0)
                    })
                    .unwrap();
                tx_ok
                    .send(if visible == 1 { "committed" } else { "early" })
                    .unwrap();
            },
        );
        let bad = db.write_then(
            |c| -> Result<(), DbError> {
                c.execute("INSERT INTO scratch(k, v) VALUES ('a', 2)", [])?;
                Ok(())
            },
            move || tx_bad.send("failed write").unwrap(),
        );
        let (ok, bad) = tokio::join!(ok, bad);
        ok.unwrap();
        assert!(bad.is_err());
        assert_eq!(seen_rx.iter().collect::<Vec<_>>(), ["committed"]);
    }

    #[tokio::test]
    async fn reader_connections_refuse_writes() {
        let db = Db::open_in_memory().unwrap();
        let err = db
            .call(|c| -> Result<usize, DbError> {
                Ok(c.execute(
                    "INSERT INTO events(at, actor, action, subject, outcome) VALUES (1,'a','b','c','ok')",
                    [],
                )?)
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn reshaping_job_rows_keeps_every_step_and_event_and_the_append_only_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            // A database as the previous release left it: schema version 2 with a job in it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].1).unwrap();
            conn.execute_batch(MIGRATIONS[1].1).unwrap();
            conn.execute_batch(
                "INSERT INTO users(forge_username, email, created_at, updated_at) VALUES ('ada','a@b.c',1,1);
                 INSERT INTO jobs(user_id, forge_username, kind, state, backend, actor, created_at_ms)
                   VALUES (1, 'ada', 'provision', 'succeeded', 'local', 'test', 5);
                 INSERT INTO job_steps(job_id, step_index, name, state, attempts, duration_ms)
                   VALUES (1, 1, 'forge_user', 'done', 2, 40), (1, 2, 'ssh_key', 'done', 1, 3);
                 INSERT INTO job_events(job_id, seq, at_ms, level, step_count, message)
                   VALUES (1, 1, 6, 'info', 2, 'job created'), (1, 2, 7, 'info', 2, 'job succeeded');
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        drop(Db::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let steps: Vec<(String, i64, Option<i64>)> = conn
            .prepare("SELECT name, attempts, duration_ms FROM job_steps ORDER BY step_index")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            steps,
            vec![
                ("forge_user".to_owned(), 2, Some(40)),
                ("ssh_key".to_owned(), 1, Some(3))
            ]
        );
        let messages: Vec<String> = conn
            .prepare("SELECT message FROM job_events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(messages, vec!["job created", "job succeeded"]);
        assert!(conn
            .execute("UPDATE job_events SET message = 'x'", [])
            .is_err());
        assert!(conn.execute("DELETE FROM job_events", []).is_err());
        let clustered: String = conn
            .query_row(
                "SELECT group_concat(name) FROM pragma_table_list WHERE wr = 1 ORDER BY name",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // Steps stay clustered by job; events are appended in time order (0004).
        assert_eq!(clustered, "job_steps");
        assert!(
            conn.execute(
                "INSERT INTO job_events(job_id, seq, at_ms, level, step_count, message) VALUES (1, 2, 8, 'info', 2, 'again')",
                [],
            )
            .is_err(),
            "a job's event numbers stay unique"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Db::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Db::open(&path),
            Err(DbError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn second_lock_on_a_data_dir_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).err().unwrap();
        assert!(err.contains("already running"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
    }
}
