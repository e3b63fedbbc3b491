//! `vm deploy|delete|show|ssh-key` and `reconcile`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::Client;

use crate::cmd_job::{finish, follow, resolve_user};
use crate::output::{self, Output};

#[derive(Subcommand)]
pub enum VmCmd {
    /// Provision the user's VM: Forge account, SSH key, node, VM, gateway, bootstrap, health.
    Deploy {
        /// Username or user id.
        user: String,
        /// Follow the job with a live progress display until it ends.
        #[arg(long)]
        follow: bool,
        /// Compute backend (default: the server's).
        #[arg(long)]
        backend: Option<String>,
        /// Manifest profile (default: the server's, `demo`).
        #[arg(long)]
        profile: Option<String>,
        /// Pin a grid node instead of selecting one.
        #[arg(long)]
        node: Option<u32>,
    },
    /// Decommission the user's VM: delete gateway and VM; the record and the Forge account stay.
    Delete {
        user: String,
        #[arg(long)]
        follow: bool,
    },
    /// The user's VM, earlier VMs and SSH key facts.
    Show { user: String },
    /// Export the user's SSH private key (audited; local socket only) to reach the VM.
    SshKey {
        user: String,
        /// Write the private key to this file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(cmd: VmCmd, client: &Client, out: &Output) -> anyhow::Result<()> {
    match cmd {
        VmCmd::Deploy {
            user,
            follow: f,
            backend,
            profile,
            node,
        } => {
            let user_id = resolve_user(client, &user).await?;
            let options = (backend.is_some() || profile.is_some() || node.is_some()).then_some(
                ProvisionOptions {
                    backend,
                    profile,
                    node_id: node,
                },
            );
            let job = client.provision_vm(user_id, options).await?;
            return started(client, job, f, out).await;
        }
        VmCmd::Delete { user, follow: f } => {
            let user_id = resolve_user(client, &user).await?;
            let job = client.decommission_vm(user_id).await?;
            return started(client, job, f, out).await;
        }
        VmCmd::Show { user } => {
            let user_id = resolve_user(client, &user).await?;
            let details = client.get_vm(user_id).await?;
            out.show(&details, |d| {
                match &d.vm {
                    Some(vm) => output::fields(&[
                        ("vm", format!("{} (id {})", vm.name, vm.vm_id)),
                        ("state", vm.state.clone()),
                        ("backend", vm.backend.clone()),
                        (
                            "node",
                            vm.node_id
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| "-".into()),
                        ),
                        ("url", vm.url.clone().unwrap_or_else(|| "-".into())),
                        (
                            "host key",
                            vm.host_key_fingerprint
                                .clone()
                                .unwrap_or_else(|| "-".into()),
                        ),
                        (
                            "ssh key",
                            vm.ssh_key_fingerprint.clone().unwrap_or_else(|| "-".into()),
                        ),
                        (
                            "ready since",
                            vm.ready_at.map(output::time).unwrap_or_else(|| "-".into()),
                        ),
                        ("deployer", vm.deployer_version.clone()),
                    ]),
                    None => println!("no live VM"),
                }
                if !d.history.is_empty() {
                    println!("\nearlier VMs:");
                    let rows: Vec<Vec<String>> = d
                        .history
                        .iter()
                        .map(|v| {
                            vec![
                                v.vm_id.to_string(),
                                v.name.clone(),
                                output::time(v.created_at),
                                v.decommissioned_at.map(output::time).unwrap_or_default(),
                            ]
                        })
                        .collect();
                    output::table(&["vm", "name", "created", "decommissioned"], &rows);
                }
            });
        }
        VmCmd::SshKey { user, out: file } => {
            let user_id = resolve_user(client, &user).await?;
            let key = client.export_ssh_key(user_id).await?;
            match file {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    f.write_all(key.private_key.as_bytes())?;
                    eprintln!(
                        "private key {} written to {} (0600); public: {}",
                        key.fingerprint,
                        path.display(),
                        key.public_key
                    );
                }
                None => print!("{}", key.private_key),
            }
        }
    }
    Ok(())
}

async fn started(client: &Client, job: Job, f: bool, out: &Output) -> anyhow::Result<()> {
    if f {
        let job = follow(client, job.job_id, out).await?;
        finish(&job, out)
    } else {
        out.show(&job, |j| {
            println!(
                "job {} {} ({} steps); follow it with `hero_os_tfgrid_deployer job follow {}`",
                j.job_id,
                crate::cmd_job::state(j.state),
                j.steps.len(),
                j.job_id
            )
        });
        Ok(())
    }
}

/// `reconcile [--fix]`.
pub async fn reconcile(fix: bool, client: &Client, out: &Output) -> anyhow::Result<()> {
    let report = client.reconcile(fix).await?;
    out.show(&report, |r| {
        let rows = |v: &[ResourceRef], what: &str| -> Vec<Vec<String>> {
            v.iter()
                .map(|x| {
                    vec![
                        what.to_owned(),
                        x.kind.clone(),
                        x.name.clone(),
                        x.user_id.map(|u| u.to_string()).unwrap_or_default(),
                        x.backend.clone(),
                    ]
                })
                .collect()
        };
        let mut all = rows(&r.orphans, "orphan");
        all.extend(rows(&r.missing, "missing"));
        all.extend(rows(&r.removed, "removed"));
        if !r.checked.is_empty() {
            println!("compared: {}", r.checked.join(", "));
        }
        for s in &r.skipped {
            println!("skipped backend {}: {}", s.backend, s.reason);
        }
        if all.is_empty() {
            println!("backend inventory and records agree: no orphans, nothing missing");
        } else {
            output::table(&["finding", "kind", "name", "user", "backend"], &all);
            if !fix && !r.orphans.is_empty() {
                println!("\nremove the orphans with `hero_os_tfgrid_deployer reconcile --fix`");
            }
        }
    });
    Ok(())
}
