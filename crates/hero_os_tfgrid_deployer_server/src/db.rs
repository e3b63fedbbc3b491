//! sqlite state: a small connection pool, WAL mode, migrations embedded in the binary.
//!
//! Calls run on tokio's blocking pool ([`Db::call`]) so the async runtime never waits on disk.
//! Writers serialize through sqlite's own lock (`busy_timeout`), which is all a single server
//! needs; [`DataDirLock`] makes sure there *is* a single server per data dir.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// Embedded migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    ("0002_jobs", include_str!("../migrations/0002_jobs.sql")),
];

/// Idle connections kept open.
const MAX_IDLE: usize = 16;

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
    #[error("database worker failed: {0}")]
    Worker(String),
}

/// Shared handle to the state database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Db {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let db = Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
        };
        let mut conn = db.connect()?;
        migrate(&mut conn)?;
        db.put(conn);
        Ok(db)
    }

    /// An in-memory database for unit tests (one shared connection).
    pub fn open_in_memory() -> Result<Db, DbError> {
        let path = PathBuf::from(format!(
            "file:memdb{}?mode=memory&cache=shared",
            rand::random::<u64>()
        ));
        let db = Db {
            inner: Arc::new(Inner {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        };
        let mut conn = db.connect()?;
        migrate(&mut conn)?;
        // Keep one connection open forever, or the shared in-memory database disappears.
        std::mem::forget(db.connect()?);
        db.put(conn);
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn connect(&self) -> Result<Connection, DbError> {
        let path = &self.inner.path;
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
        Ok(conn)
    }

    fn take(&self) -> Result<Connection, DbError> {
        let pooled = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        match pooled {
            Some(c) => Ok(c),
            None => self.connect(),
        }
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }

    /// Runs `f` with a connection on the blocking pool.
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.take()?;
            let result = f(&mut conn);
            db.put(conn);
            result
        })
        .await
        .map_err(|e| E::from(DbError::Worker(e.to_string())))?
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
                    "another hero_os_tfgrid_deployer_server is already running on data dir {} ({}); stop it first or use another --data-dir",
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

    #[test]
    fn migrations_apply_once_and_events_are_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = Db::open(&path).unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let conn = db.connect().unwrap();
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
