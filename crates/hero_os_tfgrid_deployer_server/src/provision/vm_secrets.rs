//! Writing a secret into a VM's own secret store, over the pinned SSH connection — how the VM's
//! SSO edge learns its OAuth client, its issuer and who may sign in (`configure_sso`).
//!
//! The value always travels on the remote command's stdin: never in its command line (which
//! `ps` on the VM and sshd's logs show), never in a file left on the VM in clear. The remote
//! command's output is checked, not streamed into job events, because a store's reply might
//! echo what it was given. Which store a VM has is its backend's answer
//! ([`VmSecretStore`]); what we assume about hero_proc's API stays in
//! `hero_secrets::hero_proc::assumed`.

use hero_os_tfgrid_deployer_backends::process::shell_quote;
use hero_os_tfgrid_deployer_backends::{VmInfo, VmSecretStore};
use std::sync::Mutex;

use super::agent::{SshAccess, VmAgent};
use super::steps::StepError;

/// One remote write: the command and what goes on its stdin (zeroed when dropped).
struct Write {
    command: String,
    stdin: zeroize::Zeroizing<Vec<u8>>,
}

fn write_for(vm: &VmInfo, slot: &str, value: &str) -> Result<Write, StepError> {
    hero_secrets::validate_slot(slot)
        .map_err(|e| StepError::fatal("sso.slot", format!("slot {slot:?}: {e}")))?;
    Ok(match vm.secret_store {
        VmSecretStore::HeroProc => {
            let body = hero_secrets::hero_proc::set_request_body(slot, value)
                .map_err(|e| StepError::fatal("sso.slot", e.to_string()))?;
            Write {
                command: vm.wrap_command(&hero_secrets::hero_proc::assumed::remote_call_command()),
                stdin: zeroize::Zeroizing::new(body.as_bytes().to_vec()),
            }
        }
        VmSecretStore::ProxyFiles => Write {
            command: vm.wrap_command(&format!(
                "\"$HERO_BIN_DIR/hero_proxy\" secret set --secrets-dir \"$HERO_SECRETS_DIR\" {}",
                shell_quote(slot)
            )),
            stdin: zeroize::Zeroizing::new(value.as_bytes().to_vec()),
        },
    })
}

/// Stores `value` under `slot` in the VM's secret store. Idempotent (a write overwrites).
pub async fn push(
    agent: &dyn VmAgent,
    access: &SshAccess<'_>,
    vm: &VmInfo,
    slot: &str,
    value: &str,
) -> Result<(), StepError> {
    let write = write_for(vm, slot, value)?;
    let out: Mutex<(Vec<String>, Vec<String>)> = Mutex::new((Vec::new(), Vec::new()));
    let on_line = |line: &str, stderr: bool| {
        if let Ok(mut o) = out.lock() {
            let v = if stderr { &mut o.1 } else { &mut o.0 };
            if v.len() < 50 {
                v.push(line.to_owned());
            }
        }
    };
    let code = agent
        .run_with_stdin(access, &write.command, &write.stdin, &on_line)
        .await?;
    let (stdout, stderr) = out.into_inner().unwrap_or_default();
    let failed = |why: String| {
        StepError::transient(
            "sso.secret_push",
            format!("writing {slot} into the VM's secret store failed: {why}"),
        )
    };
    if code != Some(0) {
        let tail = stderr
            .iter()
            .rev()
            .take(3)
            .rev()
            .cloned()
            .collect::<Vec<_>>();
        return Err(failed(format!(
            "{} ({})",
            code.map(|c| format!("exit status {c}"))
                .unwrap_or_else(|| "killed by a signal".into()),
            if tail.is_empty() {
                "no error output".into()
            } else {
                tail.join(" | ")
            }
        )));
    }
    match vm.secret_store {
        VmSecretStore::HeroProc => {
            hero_secrets::hero_proc::parse_reply("secrets.set", stdout.join("\n").as_bytes())
                .map(|_| ())
                .map_err(failed)
        }
        VmSecretStore::ProxyFiles => {
            if stdout.iter().any(|l| l.trim() == format!("stored {slot}")) {
                Ok(())
            } else {
                Err(failed("hero_proxy did not confirm the write".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hero_os_tfgrid_deployer_backends::{ResourceName, SshTarget};

    fn vm(store: VmSecretStore) -> VmInfo {
        VmInfo {
            name: ResourceName::new(1, "carol").unwrap(),
            backend: "x".into(),
            ssh: SshTarget {
                host: "h".into(),
                port: 22,
                user: "u".into(),
            },
            private_ip: None,
            mycelium_ip: None,
            web_backend_url: String::new(),
            manifest_path: String::new(),
            work_dir: "/w".into(),
            env_file: None,
            node_id: None,
            backend_id: None,
            secret_store: store,
        }
    }

    #[test]
    fn the_value_is_only_ever_on_stdin() {
        let value = "v4lue-'$(touch /tmp/x)'\"";
        for store in [VmSecretStore::HeroProc, VmSecretStore::ProxyFiles] {
            let w = write_for(&vm(store), "cockpit/FORGE_OAUTH_CLIENT_SECRET", value).unwrap();
            assert!(!w.command.contains("v4lue"), "{store:?}: {}", w.command);
            assert!(
                String::from_utf8_lossy(&w.stdin).contains(value) || {
                    // hero_proc's body is JSON: the value is escaped there.
                    let body: serde_json::Value = serde_json::from_slice(&w.stdin).unwrap();
                    body["params"]["value"] == value
                }
            );
        }
        assert!(write_for(&vm(VmSecretStore::ProxyFiles), "../x", "v").is_err());
    }
}
