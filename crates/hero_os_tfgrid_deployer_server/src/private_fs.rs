//! What the server writes is for its own user only: files 0600, directories 0700.
//!
//! The database (`state.db`, its `-wal` and `-shm`), the lock file and the secret store hold what
//! the deployer knows about people; a file created under the usual umask (022) is readable by
//! every local user. Two things make that impossible, here in one place:
//! * [`restrict_umask`]: every file and directory the process (and what it starts) creates is
//!   private from the start — sqlite's files, the secret store, the local backend's sandboxes;
//! * [`private_dir`] / [`private_file`]: what an earlier run (or a hand-made `mkdir`) left more
//!   open is tightened when it is ours, and refused with the reason when it is not.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Sets the process umask to 077. Process-wide on purpose: a file created anywhere in the server
/// (or by a child it starts) is then private without each call site remembering it.
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Creates `dir` (and missing parents) or checks the existing one, and leaves it with no more
/// than `mode` (0700, or 0750 for a socket directory shared with a group). A directory that is
/// more open is tightened when this user owns it; owned by someone else, it is refused (we could
/// not keep it private, and someone else decides who reads it). `what` names it in messages.
pub fn private_dir(dir: &Path, mode: u32, what: &str) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| format!("cannot create {what} {}: {e}", dir.display()))?;
    tighten(dir, mode, what)
}

/// Leaves an existing file at 0600 at most (see [`private_dir`]); a missing one is fine.
pub fn private_file(path: &Path, what: &str) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => tighten(path, 0o600, what),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot stat {what} {}: {e}", path.display())),
    }
}

fn tighten(path: &Path, mode: u32, what: &str) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot stat {what} {}: {e}", path.display()))?;
    let current = meta.permissions().mode() & 0o7777;
    let extra = current & !mode & 0o777;
    if extra == 0 {
        return Ok(());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{what} {} has mode {current:o} and is owned by uid {}, not by this server's uid {me}: \
             it would be readable by others; chmod {mode:o} it (or use another path)",
            path.display(),
            meta.uid()
        ));
    }
    let wanted = current & !extra;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))
        .map_err(|e| format!("cannot chmod {what} {}: {e}", path.display()))?;
    tracing::warn!(path = %path.display(), from = %format!("{current:o}"), to = %format!("{wanted:o}"),
        "{what} was readable by others; tightened");
    Ok(())
}
