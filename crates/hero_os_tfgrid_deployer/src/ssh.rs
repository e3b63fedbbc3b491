//! `vm ssh`: OpenSSH with the user's held key and the host key the deployer pinned on first
//! contact. Nothing lands in `~/.ssh`: the key and a one-host `known_hosts` live in a private
//! temporary directory removed when `ssh` exits or a signal ends the command.

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use tokio::process::Command;
use tokio::signal::unix::{signal, Signal, SignalKind};

use anyhow::Context;
use hero_os_tfgrid_deployer_sdk::jobs::VmSshAccess;

use crate::output::CliError;

/// The `known_hosts` text holding only the scanned keys whose fingerprint is the pinned one.
/// `scanned` is `ssh-keyscan`'s output, `fingerprints` what `ssh-keygen -lf` printed for it, line
/// by line in the same order. No match means the host is not the VM the deployer checked, and
/// connecting would hand it the user's key: refused.
pub fn pinned_known_hosts(scanned: &str, fingerprints: &str, pin: &str) -> Result<String, String> {
    let keys: Vec<&str> = scanned
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    let fps: Vec<&str> = fingerprints
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if keys.is_empty() {
        return Err("the host offered no host key".into());
    }
    if keys.len() != fps.len() {
        return Err(format!(
            "ssh-keygen listed {} fingerprints for {} keys",
            fps.len(),
            keys.len()
        ));
    }
    let kept: Vec<&str> = keys
        .iter()
        .zip(&fps)
        .filter(|(_, fp)| fp.split_whitespace().nth(1) == Some(pin))
        .map(|(k, _)| *k)
        .collect();
    if kept.is_empty() {
        let seen: Vec<&str> = fps
            .iter()
            .filter_map(|f| f.split_whitespace().nth(1))
            .collect();
        return Err(format!(
            "host key mismatch: the deployer pinned {pin}, the host offers {}; refusing to connect",
            seen.join(", ")
        ));
    }
    Ok(kept.join("\n") + "\n")
}

fn private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents)?;
    Ok(())
}

/// The pinned host key of the VM, or the refusal to connect unverified. `vm ssh` asks this before
/// it exports the key: an export is audited, and one for a connection that cannot happen is noise
/// in the log (and a private key fetched for nothing).
pub fn require_pin(access: &VmSshAccess) -> anyhow::Result<&str> {
    access.host_key_fingerprint.as_deref().ok_or_else(|| {
        CliError::new(
            "no_host_key",
            format!(
                "no host key is pinned for {} yet (its provision has not reached wait_ssh); refusing to connect unverified",
                access.vm_name
            ),
        )
        .into()
    })
}

/// Runs `ssh` to the VM (with `command`, or interactive) and returns its exit code.
pub async fn run(
    access: &VmSshAccess,
    private_key: &str,
    command: &[String],
) -> anyhow::Result<i32> {
    let pin = require_pin(access)?;
    // The temp dir below holds the user's private key until this function returns. Ctrl-C, a closed terminal or
    // a `kill` would end this process by default and leave it there in clear, so they are caught for as long as
    // this function runs, and every wait below gives way to them: the child is killed, `run` returns, the dir
    // goes with it.
    let mut signals = EndingSignals::catch()?;
    let dir = tempfile::Builder::new()
        .prefix("hero-vm-ssh-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    let port = access.port.to_string();
    let scan = signals
        .unless_interrupted(
            Command::new("ssh-keyscan")
                .args(["-T", "10", "-p", &port, &access.host])
                .kill_on_drop(true)
                .output(),
        )
        .await?
        .context("cannot run ssh-keyscan (install openssh-client)")?;
    let scanned = String::from_utf8_lossy(&scan.stdout).into_owned();
    let scan_file = dir.path().join("scanned");
    private_file(&scan_file, scanned.as_bytes())?;
    let fps = signals
        .unless_interrupted(
            Command::new("ssh-keygen")
                .arg("-lf")
                .arg(&scan_file)
                .kill_on_drop(true)
                .output(),
        )
        .await?
        .context("cannot run ssh-keygen")?;
    let known = pinned_known_hosts(&scanned, &String::from_utf8_lossy(&fps.stdout), pin).map_err(
        |why| {
            CliError::new(
                "host_key",
                format!("{}:{}: {why}", access.host, access.port),
            )
        },
    )?;
    let known_hosts = dir.path().join("known_hosts");
    private_file(&known_hosts, known.as_bytes())?;
    let key = dir.path().join("id");
    private_file(&key, private_key.as_bytes())?;
    eprintln!(
        "ssh {}@{} port {} (host key {pin}, as pinned by the deployer)",
        access.login, access.host, access.port
    );
    let mut ssh = Command::new("ssh")
        .arg("-i")
        .arg(&key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=no",
            "-p",
            &port,
        ])
        .arg(format!("{}@{}", access.login, access.host))
        .args(command)
        .kill_on_drop(true)
        .spawn()
        .context("cannot run ssh (install openssh-client)")?;
    // A signal that came before ssh existed never reached it (it shares our process group only from now on):
    // without this wait giving way, that Ctrl-C would be swallowed and ssh would run on.
    let status = signals
        .unless_interrupted(ssh.wait())
        .await?
        .context("ssh did not run")?;
    Ok(status.code().unwrap_or(255))
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT, caught while [`run`] holds the key on disk.
struct EndingSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
    quit: Signal,
}

impl EndingSignals {
    fn catch() -> anyhow::Result<EndingSignals> {
        let catch = |kind| signal(kind).context("cannot install a signal handler");
        Ok(EndingSignals {
            int: catch(SignalKind::interrupt())?,
            term: catch(SignalKind::terminate())?,
            hup: catch(SignalKind::hangup())?,
            quit: catch(SignalKind::quit())?,
        })
    }

    /// `work`, unless one of the signals comes first (or came already): then `work` is dropped (children are
    /// spawned `kill_on_drop`) and the answer is an `interrupted` error.
    async fn unless_interrupted<T>(&mut self, work: impl Future<Output = T>) -> anyhow::Result<T> {
        let name = tokio::select! {
            biased;
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
            _ = self.quit.recv() => "SIGQUIT",
            done = work => return Ok(done),
        };
        Err(CliError::new(
            "interrupted",
            format!(
                "interrupted by {name}; ssh stopped and the temporary copy of the key is removed"
            ),
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::pinned_known_hosts;

    const SCAN: &str =
        "[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza1\n[127.0.0.1]:2222 ssh-rsa AAAAB3Nza2\n";
    const FPS: &str =
        "256 SHA256:edkey [127.0.0.1]:2222 (ED25519)\n3072 SHA256:rsakey [127.0.0.1]:2222 (RSA)\n";

    #[test]
    fn keeps_only_the_pinned_key_and_refuses_any_other() {
        assert_eq!(
            pinned_known_hosts(SCAN, FPS, "SHA256:rsakey").unwrap(),
            "[127.0.0.1]:2222 ssh-rsa AAAAB3Nza2\n"
        );
        for (scan, fps, pin, want) in [
            (SCAN, FPS, "SHA256:other", "host key mismatch"),
            (SCAN, FPS, "SHA256:edke", "host key mismatch"),
            ("", "", "SHA256:edkey", "no host key"),
            (
                SCAN,
                "256 SHA256:edkey x (ED25519)\n",
                "SHA256:edkey",
                "fingerprints for 2 keys",
            ),
        ] {
            let e = pinned_known_hosts(scan, fps, pin).unwrap_err();
            assert!(e.contains(want), "{pin}: {e}");
        }
    }
}
