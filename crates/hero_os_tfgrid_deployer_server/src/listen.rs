//! Listeners: the unix socket (always) and a TCP address (only when configured).

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Binds the service socket.
///
/// A socket file left by a crashed run is removed when nothing answers on it; a live one means
/// another server is running, which is refused. The directory is created 0700 (0750 for a 0660
/// socket) before binding, so the socket is never reachable with wider permissions than `mode`.
pub async fn bind_unix(path: &Path, mode: u32) -> Result<tokio::net::UnixListener, String> {
    let parent = path
        .parent()
        .ok_or_else(|| format!("socket path {} has no parent", path.display()))?;
    let dir_mode = if mode & 0o060 != 0 { 0o750 } else { 0o700 };
    crate::private_fs::private_dir(parent, dir_mode, "socket directory")?;
    // Under the server's umask (077) a new directory is 0700; a group socket needs the group in.
    if dir_mode & 0o050 != 0 {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(dir_mode))
            .map_err(|e| format!("cannot chmod socket directory {}: {e}", parent.display()))?;
    }
    // Only a socket may be replaced: a regular file (or a link, a directory) at this path is
    // someone's data or a misconfiguration, and connecting to it fails just like a stale socket.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            return Err(format!(
                "{} exists and is not a socket ({}); refusing to replace it: move it away or set another socket_dir",
                path.display(),
                if meta.is_dir() {
                    "a directory"
                } else if meta.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "a regular file or device"
                }
            ))
        }
        _ => {}
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => {
            return Err(format!(
                "another server is already listening on {}; stop it first",
                path.display()
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(_) => {
            tracing::warn!(socket = %path.display(), "removing stale socket from an earlier run");
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(listener)
}
