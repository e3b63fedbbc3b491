//! Users: search by username prefix, a filter "expiring within 7 days", status and health
//! badges, time left, last job, URL, cursor paging, and row selection for the batch actions
//! (`batch.rs`). One page costs one `list_users` plus one `list_jobs` per row (run
//! concurrently).

use std::collections::HashMap;

use axum::extract::Query;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use futures::future::join_all;
use hero_os_tfgrid_deployer_sdk::jobs::{Job, JobKind, JobState, ListJobsParams};
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::{ListUsersParams, User, UserId, VmStatus};
use hero_os_tfgrid_deployer_sdk::Client;
use maud::html;
use serde::Deserialize;

use super::{href, optional};
use crate::auth::Admin;
use crate::error::PageResult;
use crate::layout::{
    csrf_field, expiry_cell, health_badge, job_badge, no_store, page, vm_badge, Nav,
};
use crate::time;

/// Rows per page.
pub const PAGE_SIZE: u32 = 50;

pub async fn redirect_home() -> Redirect {
    Redirect::to("/users")
}

#[derive(Debug, Default, Deserialize)]
pub struct UsersQuery {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub page: Option<u32>,
    /// `7`: only users whose VM expires within 7 days (any other value: no filter).
    #[serde(default)]
    pub expiring: Option<String>,
}

/// The one expiry window the list filters on: what an operator checks each week.
pub const EXPIRING_DAYS: i64 = 7;

/// Latest job of each user, concurrently. Users without jobs (or a server without the job
/// methods) are simply absent.
pub async fn last_jobs(client: &Client, ids: &[UserId]) -> HashMap<UserId, Job> {
    let calls = ids.iter().map(|id| {
        let client = client.clone();
        let id = *id;
        async move {
            let r = client
                .call::<methods::ListJobs>(&ListJobsParams {
                    user_id: Some(id),
                    limit: Some(1),
                    ..Default::default()
                })
                .await;
            r.ok()
                .and_then(|p| p.jobs.into_iter().next())
                .map(|j| (id, j))
        }
    });
    join_all(calls).await.into_iter().flatten().collect()
}

/// The shareable URL of a user, if their VM is ready.
fn url_of(user: &User, job: Option<&Job>) -> Option<String> {
    if user.vm_status != VmStatus::Ready {
        return None;
    }
    job.filter(|j| j.kind == JobKind::Provision && j.state == JobState::Succeeded)
        .and_then(|j| j.result.as_ref())
        .map(|r| r.url.clone())
}

pub async fn list(
    Extension(admin): Extension<Admin>,
    Query(query): Query<UsersQuery>,
) -> PageResult<Response> {
    let q = query
        .q
        .as_deref()
        .map(str::trim)
        .unwrap_or("")
        .to_ascii_lowercase();
    let page_no = query.page.unwrap_or(1).max(1);
    let now = time::now();
    let expiring = query.expiring.as_deref() == Some("7");
    let expiring_param = if expiring {
        "7".to_owned()
    } else {
        String::new()
    };
    let params = ListUsersParams {
        filter: (!q.is_empty()).then(|| q.clone()),
        cursor: query.cursor.clone().filter(|c| !c.is_empty()),
        before: query.before.clone().filter(|c| !c.is_empty()),
        limit: Some(PAGE_SIZE),
        expires_before: expiring.then_some(now + EXPIRING_DAYS * 86_400),
    };
    let active_params = ListJobsParams {
        active_only: Some(true),
        limit: Some(200),
        ..Default::default()
    };
    let (users, active, info) = tokio::join!(
        admin.client.list_users(&params),
        admin.client.call::<methods::ListJobs>(&active_params),
        admin.client.server_info()
    );
    let users = users?;
    // The service profiles the batch bar offers for a redeploy.
    let info = info?;
    let active = optional(active)?.map(|p| p.jobs.len());
    let ids: Vec<UserId> = users.users.iter().map(|u| u.user_id).collect();
    let jobs = last_jobs(&admin.client, &ids).await;
    let first = (page_no as u64 - 1) * PAGE_SIZE as u64 + 1;
    let last = first + users.users.len() as u64 - 1;

    let body = html! {
        div.page-head {
            div {
                h1 { "Users" }
                p.muted { "Everyone who has, had, or can get a personal Hero OS demo VM." }
            }
            a.btn.primary href="/users/new" { "+ New user" }
        }
        div.stats {
            div.stat { b data-testid="total-users" { (users.total) } span {
                @if q.is_empty() { "users" } @else { "matching “" (q) "”" }
                @if expiring { " · VM expiring within 7 days" }
            } }
            @if let Some(n) = active { div.stat { b { (n) } span { "active jobs" } } }
        }
        section.card {
            form.search method="get" action="/users" role="search" {
                input #q type="search" name="q" value=(q) placeholder="Search by username prefix…"
                    aria-label="Search users by username prefix" autocomplete="off" spellcheck="false";
                label.check {
                    input type="checkbox" name="expiring" value="7" checked[expiring] data-testid="expiring-filter";
                    " Expiring within 7 days"
                }
                button type="submit" { "Search" }
                @if !q.is_empty() || expiring { a.btn href="/users" { "Clear" } }
            }
            // Row selection feeds the batch actions; the form wraps the table so the checkboxes
            // are its fields (no script needed).
            form #batch method="post" action="/users/batch" data-testid="batch-form" {
            (csrf_field(&admin))
            div.batch-bar {
                span.muted { "Selected users:" }
                button type="submit" name="action" value="deploy" data-testid="batch-deploy" { "Deploy" }
                button type="submit" name="action" value="decommission" class="danger" data-testid="batch-decommission" { "Decommission" }
                span.extend {
                    button type="submit" name="action" value="extend" data-testid="batch-extend" { "Extend by" }
                    input type="number" name="days" value="14" min="1" max="3650" aria-label="Days to extend by" data-testid="batch-days";
                    " days"
                }
                @if !info.profiles.is_empty() {
                    span.extend {
                        button type="submit" name="action" value="redeploy" data-testid="batch-redeploy" { "Redeploy with" }
                        select name="profile" aria-label="Service profile to redeploy with" data-testid="batch-profile" {
                            @for p in &info.profiles {
                                option value=(p) selected[info.default_profile.as_ref() == Some(p)] { (p) }
                            }
                        }
                    }
                }
            }
            div.table-wrap {
                table data-testid="users-table" {
                    thead { tr {
                        th scope="col" { span.sr-only { "Select" } }
                        th scope="col" { "User" }
                        th scope="col" { "Status" }
                        th scope="col" { "Expires" }
                        th scope="col" .hide-sm { "Last job" }
                        th scope="col" { "URL" }
                        th scope="col" .hide-sm { "Created" }
                    } }
                    tbody {
                        @for u in &users.users {
                            @let job = jobs.get(&u.user_id);
                            tr data-user=(u.forge_username) {
                                td {
                                    input type="checkbox" name="user" value=(u.user_id)
                                        aria-label=(format!("Select {}", u.forge_username)) data-testid="select-user";
                                }
                                td {
                                    a href=(format!("/users/{}", u.user_id)) { strong { (u.forge_username) } }
                                    @if let Some(d) = &u.display_name { br; span.muted { (d) } }
                                }
                                td {
                                    (vm_badge(u.vm_status))
                                    @if u.vm_status == VmStatus::Ready { " " (health_badge(u.vm_health, u.vm_health_since)) }
                                }
                                td {
                                    @if matches!(u.vm_status, VmStatus::NoVm | VmStatus::Decommissioned) { span.muted { "—" } }
                                    @else { (expiry_cell(u.vm_expires_at, now)) }
                                }
                                td.hide-sm {
                                    @if let Some(j) = job {
                                        a href=(format!("/jobs/{}", j.job_id)) { (kind_label(j.kind)) " #" (j.job_id) }
                                        " " (job_badge(j.state))
                                    } @else { span.muted { "—" } }
                                }
                                td {
                                    @if let Some(url) = url_of(u, job) {
                                        a href=(url) target="_blank" rel="noopener noreferrer" { (url.trim_start_matches("https://").trim_start_matches("http://")) }
                                    } @else { span.muted { "—" } }
                                }
                                td.hide-sm.num { (time::utc(u.created_at)) }
                            }
                        }
                    }
                }
            }
            }
            @if users.users.is_empty() {
                div.empty {
                    @if expiring { "No VM expires within 7 days." }
                    @else if q.is_empty() { "No users yet. " a href="/users/new" { "Create the first one" } "." }
                    @else { "No user name starts with “" (q) "”." }
                }
            }
            nav.pager aria-label="Pages" {
                span.muted {
                    @if !users.users.is_empty() { "Showing " (first) "–" (last) " of " (users.total) }
                }
                div.actions {
                    @if let Some(prev) = &users.prev_cursor {
                        @if page_no > 2 { a.btn href=(href("/users", &[("q", q.clone()), ("expiring", expiring_param.clone())])) { "⇤ First page" } }
                        a.btn rel="prev" href=(href("/users", &[("q", q.clone()), ("expiring", expiring_param.clone()), ("before", prev.clone()), ("page", (page_no - 1).max(1).to_string())])) { "← Previous page" }
                    }
                    @if let Some(next) = &users.next_cursor {
                        a.btn rel="next" href=(href("/users", &[("q", q.clone()), ("expiring", expiring_param.clone()), ("cursor", next.clone()), ("page", page_no.saturating_add(1).to_string())])) { "Next page →" }
                    }
                }
            }
        }
    };
    Ok(no_store(page(&admin, "Users", Nav::Users, body)).into_response())
}

pub fn kind_label(k: JobKind) -> &'static str {
    match k {
        JobKind::Provision => "deploy",
        JobKind::Decommission => "decommission",
        JobKind::Repair => "repair",
        JobKind::Redeploy => "redeploy",
        JobKind::SyncAccess => "access sync",
    }
}
