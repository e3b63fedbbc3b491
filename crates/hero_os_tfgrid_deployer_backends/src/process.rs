//! Process bookkeeping by PID: pid files, liveness, kill with escalation.
//!
//! The local backend starts daemons (sshd, the sandbox's services) that must outlive the deployer
//! server, so it cannot hold `Child` handles; it tracks them by PID in pid files instead and kills
//! them by PID, never by name.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Read a pid file (`1234\n`). `None` if missing or not a positive number.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    (pid > 1).then_some(pid)
}

/// Is `pid` a live process? Zombies (exited, not yet reaped — e.g. a daemon reparented to a PID 1
/// that does not reap) count as dead.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: `pid (comm) state …`; comm may contain spaces or parens, so split at the last ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The command line of a live process (NUL-separated args joined by spaces), for checks that a
/// recorded PID still belongs to the process we started (PIDs are reused).
pub fn pid_cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// True when `pid` is alive and its command line mentions `needle` (a path of ours). A pid file
/// outlives its process and the kernel reuses pids, so a bare pid from a file is never enough to
/// decide to kill: after a crash or a reboot it may name someone else's process.
pub fn pid_is_ours(pid: u32, needle: &str) -> bool {
    pid_alive(pid) && pid_cmdline(pid).is_some_and(|c| c.contains(needle))
}

/// Send SIGTERM to `pid`, wait up to `grace` for it to go, then SIGKILL and wait again.
/// Returns true if the process is gone (or never existed).
pub async fn kill_pid(pid: u32, grace: Duration) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    if !pid_alive(pid) {
        return true;
    }
    let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
    if wait_gone(pid, grace).await {
        return true;
    }
    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
    wait_gone(pid, Duration::from_secs(5)).await
}

/// Poll until `pid` is dead or `timeout` passes.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1, from the OS. There is a small window between this call and the
/// user binding it; callers that start a daemon on it must check it came up.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Quote a string for a POSIX shell (single quotes, `'` → `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[tokio::test]
    async fn kill_by_pid_and_liveness() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        assert!(pid_alive(pid));
        // Right after fork the child may not have exec'd yet: poll with a deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !pid_cmdline(pid).unwrap_or_default().contains("sleep 30") {
            assert!(tokio::time::Instant::now() < deadline, "child never exec'd");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killer = tokio::spawn(async move { kill_pid(pid, Duration::from_secs(2)).await });
        let _ = child.wait().await;
        assert!(killer.await.unwrap());
        assert!(!pid_alive(pid));
    }
}
