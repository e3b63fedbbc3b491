//! One OpenTofu run at a time per working dir — across processes, and across a deployer that died.
//!
//! Why more than the backend's in-process mutex: `tofu` runs in its own process group (so a Ctrl-C at the
//! deployer's terminal does not kill it mid-apply, see `graceful_child`), so when the deployer is killed outright
//! the `tofu apply` it started runs on. The restarted deployer resumes the job and would run `tofu` in the same
//! dir beside it. OpenTofu's own state lock covers only the commands that write state, and fails at once
//! rather than waiting; `init`, `providers schema` and `output` take none.
//!
//! How: every run is `flock -F -w <wait> <dir>/.hero-tofu-run.lock tofu …`. util-linux `flock` takes an exclusive
//! lock on the file and then *becomes* `tofu` (`-F`: exec, no fork), which thereby holds the lock's open file for
//! as long as it lives — whoever started it, alive or not. The kernel drops the lock when that process ends,
//! however it ends. A second run waits for it, for at most the call's own time bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::compute::BackendError;

/// The lock file inside each working dir (OpenTofu ignores files that are not `*.tf`/`*.tf.json`).
pub const LOCK_FILE: &str = ".hero-tofu-run.lock";

/// `flock`'s exit status when the wait ran out (`-E`; 75 is `EX_TEMPFAIL`).
pub const BUSY_EXIT: i32 = 75;

/// The util-linux `flock` binary, looked up in `PATH` (util-linux is essential on Debian).
pub const FLOCK_BIN: &str = "flock";

/// `program` in `dir` as a run holding `dir`'s lock, waiting at most `wait` for it.
pub fn locked_command(dir: &Path, program: &Path, wait: Duration) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(FLOCK_BIN);
    cmd.arg("--no-fork")
        .arg("--conflict-exit-code")
        .arg(BUSY_EXIT.to_string())
        .arg("--timeout")
        .arg(wait.as_secs().max(1).to_string())
        .arg(lock_path(dir))
        .arg(program);
    cmd
}

/// True when another process holds `dir`'s run lock right now (so the next run will wait; say so first).
pub fn busy(dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(dir))
    else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_held_and_released_on_drop) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// `flock` is installed (the backend cannot run `tofu` without it).
pub fn check_installed() -> Result<PathBuf, BackendError> {
    crate::opentofu::find_executable(Path::new(FLOCK_BIN)).map_err(|_| {
        BackendError::Config(format!(
            "opentofu backend: {FLOCK_BIN} is not found in PATH (install util-linux): every tofu run holds its working dir's lock through it"
        ))
    })
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}
