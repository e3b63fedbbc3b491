//! Shared test helpers: a real OpenSSH sshd on a loopback port, killed by PID on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hero_os_tfgrid_deployer_backends::process::{free_loopback_port, pid_alive};
use hero_os_tfgrid_deployer_backends::sshd::{self, SshdFiles, DEFAULT_SSHD};
use hero_os_tfgrid_deployer_backends::UserKeyPair;
use rand::SeedableRng;

/// A deterministic user key for tests.
pub fn user_key(seed: u64) -> UserKeyPair {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    UserKeyPair::generate(&mut rng, "test@deployer").unwrap()
}

/// The current user's name (sshd run as that user only lets that user in).
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name
}

/// A running sshd; killed (SIGKILL, by PID) when dropped.
pub struct SshdGuard {
    pub pid: u32,
    pub port: u16,
    pub files: SshdFiles,
    _dir: Option<tempfile::TempDir>,
}

impl SshdGuard {
    pub async fn start(authorized: &UserKeyPair) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Self::start_in(dir.path(), authorized).await;
        g._dir = Some(dir);
        g
    }

    pub async fn start_in(dir: &Path, authorized: &UserKeyPair) -> Self {
        let port = free_loopback_port().unwrap();
        Self::start_on(dir, port, authorized).await
    }

    pub async fn start_on(dir: &Path, port: u16, authorized: &UserKeyPair) -> Self {
        Self::start_with_line(dir, port, authorized.public_openssh()).await
    }

    /// [`SshdGuard::start_on`] with `authorized_keys` holding `line` as given (key options such as a forced
    /// `command="…"` included).
    pub async fn start_with_line(dir: &Path, port: u16, line: &str) -> Self {
        let files = SshdFiles::new(dir.join("sshd"));
        sshd::write_config(&files, port, line).await.unwrap();
        let pid = sshd::start(
            Path::new(DEFAULT_SSHD),
            &files,
            port,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        Self {
            pid,
            port,
            files,
            _dir: None,
        }
    }

    pub fn host_pub(&self) -> PathBuf {
        self.files.host_key().with_extension("pub")
    }
}

impl Drop for SshdGuard {
    fn drop(&mut self) {
        if pid_alive(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Kills (SIGKILL, by PID) every process recorded in pid files under `<root>/sandboxes/*/{pids,sshd}`
/// when dropped, so a failing local-backend test leaves nothing running.
pub struct SandboxReaper {
    pub root: PathBuf,
}

impl Drop for SandboxReaper {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(self.root.join("sandboxes")) else {
            return;
        };
        for sb in rd.flatten() {
            for sub in ["pids", "sshd"] {
                let Ok(files) = std::fs::read_dir(sb.path().join(sub)) else {
                    continue;
                };
                for f in files.flatten() {
                    if let Some(pid) =
                        hero_os_tfgrid_deployer_backends::process::read_pid_file(&f.path())
                    {
                        let needle = sb.path().to_string_lossy().into_owned();
                        if hero_os_tfgrid_deployer_backends::process::pid_is_ours(pid, &needle) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
        }
    }
}
