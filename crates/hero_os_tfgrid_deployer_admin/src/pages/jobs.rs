//! Jobs: running and recent jobs of everyone, and one job's timeline.

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::collections::{BTreeSet, HashSet};

use hero_os_tfgrid_deployer_sdk::jobs::{Job, JobIdParams, JobState, ListJobsParams};
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::UserId;
use hero_os_tfgrid_deployer_sdk::{Client, ClientError, ErrorKind};
use maud::{html, Markup};
use serde::Deserialize;

use super::{href, optional};
use crate::auth::Admin;
use crate::error::{PageError, PageResult};
use crate::layout::{job_badge, no_store, page, Nav};
use crate::pages::timeline;
use crate::pages::user_detail::{action_button, job_with_events};
use crate::pages::users::kind_label;
use crate::time;

#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    pub before: Option<i64>,
}

/// The user ids among `jobs` whose record still exists: a job outlives a forgotten user, and
/// its row must not link to a user page that answers 404.
async fn known_users(client: &Client, jobs: &[&Job]) -> Result<HashSet<UserId>, ClientError> {
    let ids: BTreeSet<UserId> = jobs.iter().map(|j| j.user_id).collect();
    let found = futures::future::join_all(ids.iter().map(|id| client.get_user(*id))).await;
    let mut known = HashSet::new();
    for (id, r) in ids.into_iter().zip(found) {
        match r {
            Ok(_) => {
                known.insert(id);
            }
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(known)
}

/// A link to the user's page, or the name marked as forgotten when the record is gone.
pub fn user_ref(known: bool, user_id: UserId, username: &str) -> Markup {
    html! {
        @if known { a href=(format!("/users/{user_id}")) { (username) } }
        @else { span data-testid="forgotten-user" { (username) } " " span.muted { "(forgotten)" } }
    }
}

fn table(jobs: &[Job], known: &HashSet<UserId>, testid: &str) -> Markup {
    html! {
        div.table-wrap { table data-testid=(testid) {
            thead { tr {
                th scope="col" { "Job" } th scope="col" { "User" } th scope="col" { "State" }
                th scope="col" .hide-sm { "Step" } th scope="col" .hide-sm { "By" } th scope="col" { "Created" }
            } }
            tbody { @for j in jobs { tr {
                td { a href=(format!("/jobs/{}", j.job_id)) { (kind_label(j.kind)) " #" (j.job_id) } }
                td { (user_ref(known.contains(&j.user_id), j.user_id, &j.forge_username)) }
                td { (job_badge(j.state)) }
                td.hide-sm { @if let Some(s) = &j.current_step { code { (s) } } @else { span.muted { "—" } } }
                td.hide-sm { (j.actor) }
                td.num { (time::utc_ms(j.created_at_ms)) }
            } } }
        } }
    }
}

pub async fn list(
    Extension(admin): Extension<Admin>,
    Query(q): Query<JobsQuery>,
) -> PageResult<Response> {
    let c = &admin.client;
    let active_params = ListJobsParams {
        active_only: Some(true),
        limit: Some(200),
        ..Default::default()
    };
    let recent_params = ListJobsParams {
        before: q.before,
        limit: Some(50),
        ..Default::default()
    };
    let (active, recent) = tokio::join!(
        c.call::<methods::ListJobs>(&active_params),
        c.call::<methods::ListJobs>(&recent_params)
    );
    let active = optional(active)?;
    let recent = optional(recent)?;
    let all: Vec<&Job> = active
        .iter()
        .chain(recent.iter())
        .flat_map(|p| p.jobs.iter())
        .collect();
    let known = known_users(c, &all).await?;
    let body = html! {
        div.page-head { div { h1 { "Jobs" } p.muted { "Every deploy and decommission, newest first." } } }
        @if active.is_none() {
            div.notice.warn role="status" { strong { "Not available" } div { "This server does not run the provisioning pipeline yet." } }
        }
        @if let Some(a) = &active {
            section.card {
                h2 { "Running now (" (a.jobs.len()) ")" }
                @if a.jobs.is_empty() { div.empty { "Nothing is running." } } @else { (table(&a.jobs, &known, "active-jobs")) }
            }
        }
        @if let Some(r) = &recent {
            section.card {
                h2 { "Recent" }
                @if r.jobs.is_empty() { div.empty { "No jobs yet." } } @else { (table(&r.jobs, &known, "recent-jobs")) }
                nav.pager aria-label="Pages" {
                    span {}
                    div.actions {
                        @if q.before.is_some() { a.btn href="/jobs" { "← Newest" } }
                        @if let Some(b) = r.next_before { a.btn rel="next" href=(href("/jobs", &[("before", b.to_string())])) { "Older →" } }
                    }
                }
            }
        }
    };
    Ok(no_store(page(&admin, "Jobs", Nav::Jobs, body)).into_response())
}

pub async fn show(Extension(admin): Extension<Admin>, Path(id): Path<i64>) -> PageResult<Response> {
    let job = admin
        .client
        .call::<methods::GetJob>(&JobIdParams { job_id: id })
        .await
        .map_err(PageError::from)?;
    let user_id = job.user_id;
    let username = job.forge_username.clone();
    let known = known_users(&admin.client, &[&job])
        .await?
        .contains(&user_id);
    let (job, events, last_seq) = job_with_events(&admin.client, job).await?;
    let body = html! {
        div.page-head {
            div {
                p.muted { a href="/jobs" { "← Jobs" } " · " (user_ref(known, user_id, &username)) }
                h1 { (kind_label(job.kind)) " job #" (job.job_id) }
            }
            (job_actions(&admin, &job))
        }
        (timeline::render(&job, &events, last_seq))
    };
    Ok(no_store(page(&admin, &format!("Job #{id}"), Nav::Jobs, body)).into_response())
}

/// Cancel while the job is active, Retry once it failed: the same buttons as on the user page.
fn job_actions(admin: &Admin, job: &Job) -> Markup {
    html! {
        div.actions data-testid="job-actions" {
            @if job.state == JobState::Failed {
                (action_button(admin, &format!("/jobs/{}/retry", job.job_id), "Retry", "primary", None))
            }
            @if job.state.is_active() {
                (action_button(admin, &format!("/jobs/{}/cancel", job.job_id), "Cancel job", "danger",
                    Some(&format!("Cancel job #{} for {}? A deploy cleans up what it made.", job.job_id, job.forge_username))))
            }
        }
    }
}
