//! A child process that is interrupted, not killed, when its caller gives up on it.
//!
//! A backend call is dropped mid-way whenever the job stops waiting for it: a cancel, a step deadline, the
//! reaper, a server stop. `kill_on_drop` would SIGKILL the child then, and for `tofu` that is the worst moment:
//! a provider killed inside a create can neither record the new grid contract in `terraform.tfstate` nor undo
//! it, so the contract is left running and billed with no state that knows it (and `inventory`, which reads the
//! state, never shows it). On SIGINT, OpenTofu stops the provider cleanly and writes what it made. So the child
//! runs in its own process group (its provider plugins with it, and a terminal's Ctrl-C does not reach it), and
//! dropping a [`GracefulChild`] that has not been waited for sends SIGINT to that group, then SIGKILL only if
//! it is still running after the grace period.
//!
//! The `Child` is kept, unreaped, until the group is gone, so the pid (and the group id, which is the same
//! number) cannot be reused by another process while it is signalled.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A spawned child in its own process group; see the module doc.
pub struct GracefulChild {
    child: Option<Child>,
    grace: Duration,
}

impl GracefulChild {
    /// Spawns `cmd` as the leader of a new process group. `cmd` must not be `kill_on_drop`.
    pub fn spawn(cmd: &mut Command, grace: Duration) -> io::Result<GracefulChild> {
        let child = cmd.process_group(0).kill_on_drop(false).spawn()?;
        Ok(GracefulChild {
            child: Some(child),
            grace,
        })
    }

    /// The child, for its pipes.
    pub fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .unwrap_or_else(|| unreachable!("the child is taken only by wait() and drop"))
    }

    /// Waits for the child to exit; once it has, dropping this does nothing.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child().wait().await?;
        self.child = None;
        Ok(status)
    }
}

impl Drop for GracefulChild {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            return; // already reaped
        };
        let group = Pid::from_raw(pgid);
        let _ = killpg(group, Signal::SIGINT);
        let grace = self.grace;
        // Without a runtime to wait on (one shutting down), the interrupted child finishes on its own.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    let _ = killpg(group, Signal::SIGKILL);
                    let _ = child.wait().await;
                }
            });
        }
    }
}
