//! User detail: Forge state, token, SSH key, VM spec, node, URL, the latest job's timeline (live
//! while it runs) and the actions the user's state allows.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hero_os_tfgrid_deployer_sdk::jobs::{
    HealthState, Job, JobEventsParams, JobIdParams, JobState, ListJobsParams, VmDetails, VmRecord,
};
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::{User, VmStatus};
use hero_os_tfgrid_deployer_sdk::Client;
use maud::{html, Markup};

use super::optional;
use crate::auth::Admin;
use crate::error::PageResult;
use crate::layout::{csrf_field, job_badge, no_store, page, vm_badge, Nav};
use crate::pages::timeline;
use crate::pages::users::kind_label;
use crate::time;

/// The latest job of a user with its events (for the timeline).
pub async fn job_with_events(
    client: &Client,
    job: Job,
) -> PageResult<(Job, Vec<hero_os_tfgrid_deployer_sdk::jobs::JobEvent>, i64)> {
    let page = optional(
        client
            .call::<methods::JobEvents>(&JobEventsParams {
                job_id: job.job_id,
                after_seq: 0,
                wait_ms: 0,
                limit: Some(1000),
            })
            .await,
    )?;
    // Re-read the job after the events so the steps are at least as new as the log.
    let job = optional(
        client
            .call::<methods::GetJob>(&JobIdParams { job_id: job.job_id })
            .await,
    )?
    .unwrap_or(job);
    Ok(match page {
        Some(p) => (job, p.events, p.last_seq),
        None => (job, Vec::new(), 0),
    })
}

pub async fn show(Extension(admin): Extension<Admin>, Path(id): Path<i64>) -> PageResult<Response> {
    let c = &admin.client;
    let vm_params = hero_os_tfgrid_deployer_sdk::types::UserIdParams { user_id: id };
    let jobs_params = ListJobsParams {
        user_id: Some(id),
        limit: Some(10),
        ..Default::default()
    };
    let jobs = optional(c.call::<methods::ListJobs>(&jobs_params).await)?
        .map(|p| p.jobs)
        .unwrap_or_default();
    let latest = match jobs.first().cloned() {
        Some(j) => Some(job_with_events(c, j).await?),
        None => None,
    };
    // The user and VM are read after the job: the server writes a job's end after (or with)
    // what it changed, so a page that shows a job as ended also shows its outcome, never the
    // status from before it.
    let (user, vm) = tokio::join!(c.get_user(id), c.call::<methods::GetVm>(&vm_params));
    let user = user?;
    let vm = optional(vm)?;
    // The server's facts (Forge URL, service profiles) matter only for a ready VM's cards.
    let info = match user.vm_status {
        VmStatus::Ready => Some(c.server_info().await?),
        _ => None,
    };
    let active = latest.as_ref().is_some_and(|l| l.0.state.is_active());
    let invitation = info
        .as_ref()
        .and_then(|i| crate::pages::invitation::card(i, &user, vm.as_ref()));
    let care = info
        .as_ref()
        .filter(|_| !active)
        .and_then(|i| crate::pages::vm_care::card(&admin, i, &user, vm.as_ref()));
    let body = html! {
        div.page-head {
            div {
                p.muted { a href="/users" { "← Users" } }
                h1 { (user.forge_username) " " (vm_badge(user.vm_status)) }
                @if let Some(d) = &user.display_name { p.muted { (d) } }
            }
            (actions(&admin, &user, latest.as_ref().map(|l| &l.0), vm.as_ref()))
        }
        div.grid {
            section.card { h2 { "Forge account" } (forge_facts(&user)) }
            section.card { h2 { "Demo VM" } (vm_facts(&user, vm.as_ref())) }
        }
        @if let Some(card) = invitation { (card) }
        @if let Some(card) = care { (card) }
        @if let Some((job, events, last_seq)) = &latest {
            (timeline::render(job, events, *last_seq))
        } @else {
            section.card { div.empty { "No jobs yet. “Deploy VM” starts one." } }
        }
        @if jobs.len() > 1 {
            section.card {
                h2 { "Earlier jobs" }
                div.table-wrap { table {
                    thead { tr { th { "Job" } th { "State" } th { "By" } th { "Created" } } }
                    tbody { @for j in jobs.iter().skip(1) { tr {
                        td { a href=(format!("/jobs/{}", j.job_id)) { (kind_label(j.kind)) " #" (j.job_id) } }
                        td { (job_badge(j.state)) }
                        td { (j.actor) }
                        td { (time::utc_ms(j.created_at_ms)) }
                    } } }
                } }
            }
        }
    };
    Ok(no_store(page(&admin, &user.forge_username, Nav::Users, body)).into_response())
}

fn forge_facts(u: &User) -> Markup {
    html! {
        dl.facts {
            dt { "Login" } dd { code { (u.forge_username) } }
            dt { "Account" } dd data-testid="forge-account" {
                @match u.forge_account() {
                    Some((how, id)) => { (how) span.muted { " · Forge id " (id) } },
                    None => { span.badge.warn { "setup incomplete" } " create again to resume" },
                }
            }
            dt { "API token" } dd data-testid="token-state" {
                @if u.forge_token_set { span.badge.ok { "set" } }
                @else { span.badge.warn { "not set" } @if let Some(n) = &u.forge_token_note { " " span.muted { (n) } } }
            }
            dt { "Initial password" } dd { @if u.initial_password_held { "held (reveal is audited)" } @else { span.muted { "not known" } } }
            dt { "Email" } dd { (u.email) }
            dt { "Created" } dd { (time::utc(u.created_at)) }
        }
    }
}

fn vm_facts(u: &User, vm: Option<&VmDetails>) -> Markup {
    let current = vm.and_then(|v| v.vm.as_ref());
    html! {
        dl.facts {
            dt { "Status" } dd { (vm_badge(u.vm_status)) }
            @if let Some(v) = current {
                dt { "URL" } dd { @if let Some(url) = &v.url {
                    @if u.vm_status == VmStatus::Ready { a href=(url) target="_blank" rel="noopener noreferrer" data-testid="gateway-url" { (url) } }
                    @else { span.muted { (url) } }
                } @else { span.muted { "—" } } }
                @if v.state == "ready" {
                    dt { "Health" } dd data-testid="health" { @match &v.health {
                        None => span.muted { "not probed yet" },
                        Some(h) if h.state == HealthState::Healthy => span.badge.ok data-health="healthy" { "healthy" },
                        Some(h) => span.badge.bad data-health="unreachable" title=[h.last_error.as_deref()] {
                            "down since " (time::utc(h.since))
                        },
                    } }
                }
                dt { "Expires" } dd data-testid="expires" { @match v.expires_at {
                    Some(at) => (time::utc(at)),
                    None => span.muted { "never" },
                } }
                dt { "Node" } dd { @if let Some(n) = v.node_id { "node " (n) } @else { span.muted { "—" } } }
                dt { "Backend" } dd { code { (v.backend) } " · " (v.name) }
                (spec_facts(v))
                @if let Some(ip) = v.mycelium_ip.as_ref().or(v.private_ip.as_ref()) { dt { "Address" } dd { code { (ip) } } }
                @if let Some(fp) = &v.host_key_fingerprint { dt { "Host key" } dd { code { (fp) } } }
            }
            dt { "SSH key" } dd { @match vm.and_then(|v| v.ssh_key_fingerprint.as_ref()) {
                Some(fp) => code data-testid="ssh-fingerprint" { (fp) },
                None => span.muted { "not generated yet" },
            } }
            @if let Some(v) = vm { @if !v.history.is_empty() {
                dt { "Earlier VMs" } dd { (v.history.len()) }
            } }
        }
    }
}

/// What the VM is, labelled as what it is: a local sandbox is a process tree on this machine
/// (the grid spec does not apply to it), a grid VM shows its spec once the backend made it, and
/// one never created shows the spec only as requested.
fn spec_facts(v: &VmRecord) -> Markup {
    let created = v.backend_id.is_some() || v.ready_at.is_some();
    html! {
        @if v.backend == "local" {
            dt { "Kind" } dd data-testid="vm-kind" { "local sandbox on this machine " span.muted { "(no VM: sshd and a web server in a directory)" } }
        } @else if created {
            dt { "Kind" } dd data-testid="vm-kind" { "grid VM" }
            dt { "Spec" } dd data-testid="vm-spec" { (spec_text(&v.spec)) }
        } @else {
            dt { "Kind" } dd data-testid="vm-kind" { "grid VM " span.muted { "(not created yet)" } }
            dt { "Requested" } dd data-testid="vm-spec" { (spec_text(&v.spec)) }
        }
    }
}

/// `16 vCPU · 8 GB memory · 16 GB root disk · 200 GB disk · ubuntu-24.04` from the recorded spec;
/// unknown keys are shown as they are.
fn spec_text(spec: &serde_json::Value) -> String {
    let Some(obj) = spec.as_object() else {
        return if spec.is_null() {
            "—".into()
        } else {
            spec.to_string()
        };
    };
    let gb = |mb: i64| {
        if mb % 1024 == 0 {
            format!("{} GB", mb / 1024)
        } else {
            format!("{mb} MB")
        }
    };
    let mut parts = Vec::new();
    for (k, v) in obj {
        let n = v.as_i64();
        let part = match (k.as_str(), n) {
            ("cpu" | "vcpu" | "cpus", Some(n)) => format!("{n} vCPU"),
            ("memory_mb", Some(n)) => format!("{} memory", gb(n)),
            ("rootfs_mb", Some(n)) => format!("{} root disk", gb(n)),
            ("disk_gb", Some(n)) => format!("{n} GB disk"),
            ("flist", _) => v
                .as_str()
                .and_then(|f| f.rsplit('/').next())
                .map(|f| f.trim_end_matches(".flist").to_owned())
                .unwrap_or_default(),
            ("entrypoint", _) => continue,
            (_, _) => match v {
                serde_json::Value::Bool(true) => k.replace('_', " "),
                serde_json::Value::Bool(false) => continue,
                serde_json::Value::String(s) => format!("{} {s}", k.replace('_', " ")),
                serde_json::Value::Number(n) => format!("{} {n}", k.replace('_', " ")),
                _ => continue,
            },
        };
        if !part.is_empty() {
            parts.push(part);
        }
    }
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(" · ")
    }
}

/// A POST button; destructive ones carry `confirm` (JS asks; without JS the server asks).
pub fn action_button(
    admin: &Admin,
    action: &str,
    label: &str,
    class: &str,
    confirm: Option<&str>,
) -> Markup {
    html! {
        form method="post" action=(action) data-confirm=[confirm] {
            (csrf_field(admin))
            @if confirm.is_some() { input type="hidden" name="confirm" value=""; }
            button type="submit" class=(class) { (label) }
        }
    }
}

fn actions(admin: &Admin, u: &User, job: Option<&Job>, vm: Option<&VmDetails>) -> Markup {
    let base = format!("/users/{}", u.user_id);
    let active = job.is_some_and(|j| j.state.is_active());
    let failed = job.filter(|j| j.state == JobState::Failed);
    let has_vm = vm.is_some_and(|v| v.vm.is_some())
        || matches!(
            u.vm_status,
            VmStatus::Ready | VmStatus::Failed | VmStatus::Provisioning
        );
    let can_deploy = !active && matches!(u.vm_status, VmStatus::NoVm | VmStatus::Decommissioned);
    html! {
        div.actions data-testid="actions" {
            @if can_deploy { (action_button(admin, &format!("{base}/deploy"), "Deploy VM", "primary", None)) }
            @if let Some(j) = failed { (action_button(admin, &format!("/jobs/{}/retry", j.job_id), "Retry", "primary", None)) }
            @if let Some(j) = job.filter(|j| j.state.is_active()) {
                (action_button(admin, &format!("/jobs/{}/cancel", j.job_id), "Cancel job", "danger",
                    Some(&format!("Cancel job #{} for {}? A deploy cleans up what it made.", j.job_id, u.forge_username))))
            }
            @if u.vm_status == VmStatus::Ready && !active {
                (action_button(admin, &format!("{base}/repair"), "Repair VM", "",
                    Some(&format!("Repair the VM of {}? Its manifest, sign-in settings and bootstrap run again on the same VM.", u.forge_username))))
            }
            @if has_vm && !active {
                (action_button(admin, &format!("{base}/decommission"), "Decommission", "danger",
                    Some(&format!("Decommission the VM of {}? Their URL stops working; the Forge account stays.", u.forge_username))))
            }
            // A record nothing can decommission (its resources are gone) is a dead end until it is
            // forgotten; a ready VM is decommissioned instead.
            @if has_vm && !active && u.vm_status != VmStatus::Ready {
                (action_button(admin, &format!("{base}/forget-vm"), "Forget VM records", "",
                    Some(&format!("Forget the VM records of {}? Only if the backend confirms the VM and gateway are gone.", u.forge_username))))
            }
            @if u.initial_password_held { (action_button(admin, &format!("{base}/reveal-password"), "Reveal password", "", None)) }
            @if u.setup_complete {
                (action_button(admin, &format!("{base}/reset-password"), "Reset Forge password", "",
                    Some(&format!("Give {} a new Forge password? The current one stops working; the new one is shown once.", u.forge_username))))
            }
            @if !has_vm && !active {
                (action_button(admin, &format!("{base}/delete"), "Forget user", "danger",
                    Some(&format!("Forget {}? Their deployer record and secrets are deleted; the Forge account stays.", u.forge_username))))
            }
        }
    }
}
