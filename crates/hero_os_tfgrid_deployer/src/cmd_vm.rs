//! `vm deploy|delete|forget|repair|redeploy|extend|show|list|check|ssh|ssh-key` and `reconcile`.

use std::io::Write;
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
        /// Username or numeric user id.
        #[arg(required_unless_present_any = ["users", "all_without_vm"], conflicts_with_all = ["users", "all_without_vm"])]
        user: Option<String>,
        /// Deploy for several users at once (comma-separated), with one combined progress view.
        #[arg(long, value_name = "A,B,C", conflicts_with = "all_without_vm")]
        users: Option<String>,
        /// Deploy for every user whose setup is complete and who has no VM.
        #[arg(long)]
        all_without_vm: bool,
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
        /// Days until the VM expires and is decommissioned (1 to 3650), or `never` (also `0`)
        /// (default: the server's `provision.expiry.default_days`).
        #[arg(long, value_name = "DAYS|never", value_parser = parse_days)]
        expires_in_days: Option<u32>,
    },
    /// Move the VM's expiry later (`--days N`) or make it never expire (`--never`).
    Extend {
        /// Username or numeric user id.
        user: String,
        /// Days to add (from now when the expiry already passed).
        #[arg(long, required_unless_present = "never", conflicts_with = "never")]
        days: Option<u32>,
        /// The VM never expires.
        #[arg(long)]
        never: bool,
    },
    /// Decommission the user's VM: delete gateway and VM; the record and the Forge account stay.
    Delete {
        /// Username or numeric user id.
        user: String,
        /// Follow the job with a live progress display until it ends.
        #[arg(long)]
        follow: bool,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Forget the user's VM and gateway records whose resources are gone (audited; the user
    /// stays). The backend must confirm they are gone, or the record never reached it.
    Forget {
        /// Username or numeric user id.
        user: String,
        /// Forget without the backend's confirmation (a backend that cannot be asked, e.g.
        /// opentofu without a mnemonic). Never while a job is active for the user; what is left
        /// on a backend is an orphan `reconcile` reports.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Repair the user's ready VM in place: push the manifest, the SSO slots, run the
    /// bootstrap and verify health again (a job like deploy, with the same progress and audit).
    Repair {
        /// Username or numeric user id.
        user: String,
        /// Follow the job with a live progress display until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// Give the user's ready VM another service profile in place: the repair steps with the
    /// new profile's `services.toml` (the VM, its URL and its sign-in stay). The VM records the
    /// profile when the job succeeds; a later repair keeps it.
    Redeploy {
        /// Username or numeric user id.
        user: String,
        /// The service profile to run from now on (one the server knows, e.g. `demo`).
        #[arg(long)]
        profile: String,
        /// Follow the job with a live progress display until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// The invitation to send the user once their VM is ready: URL, how to sign in, what to
    /// expect (message on stdout; the password is never in it — the reminder on stderr says how
    /// to send it).
    Invite {
        /// Username or user id.
        user: String,
    },
    /// The user's VM, earlier VMs and SSH key facts.
    Show {
        /// Username or numeric user id.
        user: String,
    },
    /// Every live VM: user, state, health, URL, backend and node.
    List {
        /// Only users whose name starts with this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Probe the public /health of the user's VM (or, without a user, of every ready VM)
    /// through its gateway now, instead of waiting for the health watch's next round.
    Check {
        /// Username or numeric user id (default: every ready VM).
        user: Option<String>,
    },
    /// Open a shell (or run COMMAND) on the user's VM with OpenSSH: the held key (export is
    /// audited; local socket only) and the host key the deployer pinned. Prints host and port.
    Ssh {
        /// Username or numeric user id.
        user: String,
        /// A command to run instead of a shell (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Export the user's SSH private key (audited; local socket only) to reach the VM.
    SshKey {
        /// Username or numeric user id.
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
            users,
            all_without_vm,
            follow: f,
            backend,
            profile,
            node,
            expires_in_days,
        } => {
            let options = (backend.is_some()
                || profile.is_some()
                || node.is_some()
                || expires_in_days.is_some())
            .then_some(ProvisionOptions {
                backend,
                profile,
                node_id: node,
                expires_in_days,
            });
            let many = match (users, all_without_vm) {
                (Some(list), _) => Some(crate::cmd_batch::Targets::Named(list)),
                (None, true) => Some(crate::cmd_batch::Targets::AllWithoutVm),
                (None, false) => None,
            };
            if let Some(targets) = many {
                return crate::cmd_batch::deploy_many(targets, options, client, out).await;
            }
            let user_id = resolve_user(client, &user.unwrap_or_default()).await?;
            let job = client.provision_vm(user_id, options).await?;
            return started(client, job, f, out).await;
        }
        VmCmd::Delete {
            user,
            follow: f,
            yes,
        } => {
            // The question names whom the answer acts on, as resolved, not as typed.
            let u = crate::cmd_user::resolve(client, &user).await?;
            let (user, user_id) = (u.forge_username, u.user_id);
            output::confirm(
                &format!("Decommission the VM of {user} (its gateway and VM are deleted)?"),
                yes,
            )?;
            let job = client.decommission_vm(user_id).await?;
            return started(client, job, f, out).await;
        }
        VmCmd::Forget { user, force, yes } => {
            let u = crate::cmd_user::resolve(client, &user).await?;
            let (user, user_id) = (u.forge_username, u.user_id);
            output::confirm(
                &if force {
                    format!("Forget the VM records of {user} without asking the backend whether its VM and gateway are gone?")
                } else {
                    format!("Forget the VM records of {user} (only if the backend confirms its VM and gateway are gone)?")
                },
                yes,
            )?;
            let r = client.forget_vm(user_id, force).await?;
            out.show(&r, |r| {
                let or_none = |v: &[String]| {
                    if v.is_empty() {
                        "none".to_owned()
                    } else {
                        v.join(", ")
                    }
                };
                output::fields(&[
                    ("user", r.forge_username.clone()),
                    ("forced", if r.forced { "yes" } else { "no" }.to_owned()),
                    ("vms forgotten", or_none(&r.vms)),
                    ("gateways forgotten", or_none(&r.gateways)),
                    (
                        "grounds",
                        if r.grounds.is_empty() {
                            "none needed".to_owned()
                        } else {
                            r.grounds.join("; ")
                        },
                    ),
                    ("oauth app", r.sso_app.clone()),
                ])
            });
        }
        VmCmd::Extend { user, days, never } => {
            let user_id = resolve_user(client, &user).await?;
            let vm = client
                .extend_vm(user_id, if never { None } else { days })
                .await?;
            out.show(&vm, |v| {
                println!(
                    "{}: expires {}",
                    v.forge_username,
                    output::expiry(v.expires_at)
                )
            });
        }
        VmCmd::Repair { user, follow: f } => {
            let user_id = resolve_user(client, &user).await?;
            let job = client.repair_vm(user_id).await?;
            return started(client, job, f, out).await;
        }
        VmCmd::Redeploy {
            user,
            profile,
            follow: f,
        } => {
            let user_id = resolve_user(client, &user).await?;
            let job = client.redeploy_vm(user_id, &profile).await?;
            return started(client, job, f, out).await;
        }
        VmCmd::Invite { user } => return crate::cmd_invite::run(&user, client, out).await,
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
                            "profile",
                            vm.profile
                                .clone()
                                .unwrap_or_else(|| "(server default)".into()),
                        ),
                        ("health", output::health(vm.health.as_ref())),
                        ("expires", output::expiry(vm.expires_at)),
                        (
                            "last healthy",
                            vm.health
                                .as_ref()
                                .and_then(|h| h.last_healthy_at)
                                .map(output::time)
                                .unwrap_or_else(|| "-".into()),
                        ),
                        (
                            "last error",
                            vm.health
                                .as_ref()
                                .and_then(|h| h.last_error.clone())
                                .unwrap_or_else(|| "-".into()),
                        ),
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
                                v.backend.clone(),
                                v.state.clone(),
                                output::time(v.created_at),
                                v.decommissioned_at.map(output::time).unwrap_or_default(),
                            ]
                        })
                        .collect();
                    output::table(
                        &[
                            "vm",
                            "name",
                            "backend",
                            "state",
                            "created",
                            "decommissioned",
                        ],
                        &rows,
                    );
                }
            });
        }
        VmCmd::SshKey { user, out: file } => {
            let user_id = resolve_user(client, &user).await?;
            let key = client.export_ssh_key(user_id).await?;
            match file {
                Some(path) => {
                    write_private(&path, key.private_key.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "private key {} written to {} (0600); public: {}",
                        key.fingerprint,
                        path.display(),
                        key.public_key
                    );
                }
                // With --json the key travels inside an object like every other answer, never
                // as bare text a script could mistake for a JSON document.
                None => out.show(&key, |k| print!("{}", k.private_key)),
            }
        }
        VmCmd::Ssh { user, command } => {
            let user_id = resolve_user(client, &user).await?;
            let access = client.vm_ssh_target(user_id).await?;
            crate::ssh::require_pin(&access)?;
            let key = client.export_ssh_key(user_id).await?;
            let code = crate::ssh::run(&access, &key.private_key, &command).await?;
            std::process::exit(code);
        }
        VmCmd::List { filter } => {
            let list = client.list_vms(filter).await?;
            show_vms(&list, out);
        }
        VmCmd::Check { user } => {
            let user_id = match user {
                Some(u) => Some(resolve_user(client, &u).await?),
                None => None,
            };
            let list = client.check_health(user_id).await?;
            show_vms(&list, out);
        }
    }
    Ok(())
}

/// The table of `vm list` and `vm check` (`--json`: the `VmList` object, so fields can join
/// later without breaking scripts).
fn show_vms(list: &VmList, out: &Output) {
    out.show(list, |l| {
        let rows: Vec<Vec<String>> = l
            .vms
            .iter()
            .map(|v| {
                vec![
                    v.forge_username.clone(),
                    v.state.clone(),
                    output::health(v.health.as_ref()),
                    output::expiry(v.expires_at),
                    v.url.clone().unwrap_or_else(|| "-".into()),
                    v.backend.clone(),
                    v.node_id
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into()),
                    v.ready_at.map(output::time).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        output::table(
            &[
                "user",
                "state",
                "health",
                "expires",
                "url",
                "backend",
                "node",
                "ready since",
            ],
            &rows,
        );
        println!("{} VM(s)", l.vms.len());
    });
}

/// `--expires-in-days`: a number of days, or `never` (0).
fn parse_days(s: &str) -> Result<u32, String> {
    match s {
        "never" => Ok(0),
        n => n
            .parse()
            .map_err(|_| format!("expected a number of days or `never`, got {n:?}")),
    }
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
pub async fn reconcile(fix: bool, yes: bool, client: &Client, out: &Output) -> anyhow::Result<()> {
    if fix {
        output::confirm(
            "Delete every backend resource the deployer has no record of (orphans)?",
            yes,
        )?;
    }
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
                println!(
                    "\nremove the orphans with `hero_os_tfgrid_deployer reconcile --fix --yes`"
                );
            }
        }
    });
    Ok(())
}

/// Writes a private key to `path` as a new 0600 file renamed into place. Opening `path` itself with mode 0600
/// would apply the mode only when the file is created: an existing 0644 file (or whatever a symlink there points
/// at) would get the key at its old mode. The rename replaces the name, never follows it.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    // tempfile creates its file 0600, with O_EXCL.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
