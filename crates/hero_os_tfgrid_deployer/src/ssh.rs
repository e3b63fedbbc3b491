//! `vm ssh`: OpenSSH with the user's held key and the host key the deployer pinned on first
//! contact. Nothing lands in `~/.ssh`: the key and a one-host `known_hosts` live in a private
//! temporary directory removed when `ssh` exits.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

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

/// Runs `ssh` to the VM (with `command`, or interactive) and returns its exit code.
pub fn run(access: &VmSshAccess, private_key: &str, command: &[String]) -> anyhow::Result<i32> {
    let Some(pin) = access.host_key_fingerprint.as_deref() else {
        return Err(CliError::new(
            "no_host_key",
            format!(
                "no host key is pinned for {} yet (its provision has not reached wait_ssh); refusing to connect unverified",
                access.vm_name
            ),
        )
        .into());
    };
    // The temp dir below holds the user's private key until this function returns. Ctrl-C, a closed terminal or
    // a `kill` while ssh runs would end this process by default and leave it there in clear, so they are caught
    // for as long as this process lives (tokio installs a handler, not SIG_IGN, so ssh still starts with the
    // default dispositions and reacts itself); ssh ends, and the dir goes with the return.
    let _caught = catch_ending_signals()?;
    let dir = tempfile::Builder::new()
        .prefix("hero-vm-ssh-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    let port = access.port.to_string();
    let scan = Command::new("ssh-keyscan")
        .args(["-T", "10", "-p", &port, &access.host])
        .output()
        .context("cannot run ssh-keyscan (install openssh-client)")?;
    let scanned = String::from_utf8_lossy(&scan.stdout).into_owned();
    let scan_file = dir.path().join("scanned");
    private_file(&scan_file, scanned.as_bytes())?;
    let fps = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&scan_file)
        .output()
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
    let status = Command::new("ssh")
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
        .status()
        .context("cannot run ssh (install openssh-client)")?;
    Ok(status.code().unwrap_or(255))
}

/// Catches SIGINT, SIGTERM, SIGHUP and SIGQUIT (see [`run`]); the returned streams are never read.
fn catch_ending_signals() -> anyhow::Result<Vec<tokio::signal::unix::Signal>> {
    use tokio::signal::unix::{signal, SignalKind};
    [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ]
    .into_iter()
    .map(|kind| signal(kind).context("cannot install a signal handler"))
    .collect()
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
