//! Batch actions on the rows selected in the users list: deploy, decommission and redeploy with a
//! service profile (both confirmed first), extend by N days. Each selected user is one ordinary call
//! (`provision_vm`, `decommission_vm`, `redeploy_vm`, `extend_vm`), so the server's one-active-job-per-user rule, its global
//! concurrency limit and its audit apply unchanged; one user's refusal does not stop the others,
//! and the result page says per user what happened. Started jobs are followed together on
//! `/batches?job=…`: a line per user and one overall bar, refreshed while any job is active.

use axum::extract::{Form, Query};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{StreamExt, TryStreamExt};
use hero_os_tfgrid_deployer_sdk::jobs::{
    ExtendVmParams, Job, JobIdParams, JobState, ProvisionVmParams, RedeployVmParams, StepState,
};
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::{UserId, UserIdParams};
use maud::{html, Markup};

use crate::auth::Admin;
use crate::csrf;
use crate::error::{PageError, PageResult};
use crate::layout::{csrf_field, job_badge, no_store, page, Nav};
use crate::pages::actions::already_done;
use crate::pages::users::kind_label;
use crate::time;

/// Users one batch may name: a page of the users list holds at most 50; this bounds what one
/// POST can make the dashboard do.
pub const MAX_BATCH: usize = 500;

/// Longest extension one batch may ask for: the server's bound, checked here before anything is sent.
const MAX_DAYS: u32 = hero_os_tfgrid_deployer_sdk::jobs::MAX_EXTEND_DAYS;

/// How many server calls one batch page makes at once: a batch of 500 must not open 500 connections to the
/// server together (in order, so the results line up with the rows).
const CONCURRENT_CALLS: usize = 8;

/// While a followed job is active, the progress page reloads after this long.
const REFRESH_MS: u32 = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Deploy,
    Decommission,
    Extend(u32),
    /// With this service profile.
    Redeploy(String),
}

impl Action {
    fn verb(&self) -> &'static str {
        match self {
            Action::Deploy => "Deploy",
            Action::Decommission => "Decommission",
            Action::Extend(_) => "Extend",
            Action::Redeploy(_) => "Redeploy",
        }
    }

    /// Whether the batch asks first: what it does to a VM cannot be taken back (decommission), or
    /// sets up again services people may be using at that moment (redeploy).
    fn needs_confirmation(&self) -> bool {
        matches!(self, Action::Decommission | Action::Redeploy(_))
    }
}

/// The posted form: repeated `user` fields, so read as pairs (serde's struct form cannot hold a
/// repeated key).
struct BatchForm {
    action: Action,
    users: Vec<UserId>,
    confirmed: bool,
}

/// The distinct ids of the repeated field `key`, in order, refusing past [`MAX_BATCH`] as soon as it is
/// passed: a body of 150 000 fields must cost no more than one of 501 (it took a minute of CPU when every id
/// was compared with every other before the bound was checked).
fn distinct_ids(pairs: &[(String, String)], key: &str, what: &str) -> Result<Vec<i64>, PageError> {
    let mut ids = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == key) {
        let id: i64 = v
            .parse()
            .map_err(|_| PageError::BadRequest(format!("{v:?} is not a {what}")))?;
        if seen.insert(id) {
            ids.push(id);
        }
        if ids.len() > MAX_BATCH {
            return Err(PageError::BadRequest(format!(
                "more than {MAX_BATCH} {key}s given; one batch takes at most {MAX_BATCH}"
            )));
        }
    }
    Ok(ids)
}

fn parse(pairs: &[(String, String)]) -> Result<BatchForm, PageError> {
    let bad = |m: String| PageError::BadRequest(m);
    let one = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let users = distinct_ids(pairs, "user", "user id")?;
    if users.is_empty() {
        return Err(bad(
            "no user selected: tick the users to act on, then choose the action".into(),
        ));
    }
    let action = match one("action") {
        Some("deploy") => Action::Deploy,
        Some("decommission") => Action::Decommission,
        Some("redeploy") => match one("profile").map(str::trim) {
            Some(p) if !p.is_empty() => Action::Redeploy(p.to_owned()),
            _ => {
                return Err(bad(
                    "redeploy: choose the service profile to redeploy with".into()
                ))
            }
        },
        Some("extend") => {
            let raw = one("days").unwrap_or("").trim();
            match raw.parse::<u32>() {
                Ok(d) if (1..=MAX_DAYS).contains(&d) => Action::Extend(d),
                _ => {
                    return Err(bad(format!(
                        "extend by {raw:?} days: give a whole number of days from 1 to {MAX_DAYS}"
                    )))
                }
            }
        }
        Some(other) => return Err(bad(format!("unknown batch action {other:?}"))),
        None => return Err(bad("no batch action chosen".into())),
    };
    Ok(BatchForm {
        action,
        users,
        confirmed: one("confirm") == Some("yes"),
    })
}

/// What happened to one selected user.
enum Outcome {
    Started(Box<Job>),
    Extended(Option<i64>),
    Refused(String),
}

async fn apply(admin: &Admin, action: &Action, user_id: UserId) -> Outcome {
    let c = &admin.client;
    let r = match action {
        Action::Deploy => c
            .call::<methods::ProvisionVm>(&ProvisionVmParams {
                user_id,
                options: None,
            })
            .await
            .map(|j| Outcome::Started(Box::new(j))),
        Action::Decommission => c
            .call::<methods::DecommissionVm>(&UserIdParams { user_id })
            .await
            .map(|j| Outcome::Started(Box::new(j))),
        Action::Extend(days) => c
            .call::<methods::ExtendVm>(&ExtendVmParams {
                user_id,
                days: Some(*days),
                never: false,
            })
            .await
            .map(|vm| Outcome::Extended(vm.expires_at)),
        Action::Redeploy(profile) => c
            .call::<methods::RedeployVm>(&RedeployVmParams {
                user_id,
                profile: profile.clone(),
            })
            .await
            .map(|j| Outcome::Started(Box::new(j))),
    };
    r.unwrap_or_else(|e| Outcome::Refused(e.to_string()))
}

/// `POST /users/batch`.
pub async fn submit(
    Extension(admin): Extension<Admin>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult<Response> {
    // The CSRF token first: a cross-site post is refused before any of its fields is looked at.
    let token = pairs
        .iter()
        .find(|(n, _)| n == "csrf")
        .map_or("", |(_, v)| v.as_str());
    csrf::check(&admin, token)?;
    let form = parse(&pairs)?;
    if let Action::Redeploy(profile) = &form.action {
        // Checked once, before anything is asked or started: an unknown profile would otherwise be one
        // refusal per user, after a confirmation page naming them all.
        let known = admin.client.server_info().await?.profiles;
        if !known.contains(profile) {
            return Err(PageError::BadRequest(format!(
                "unknown service profile {profile:?}; the server knows: {}",
                known.join(", ")
            )));
        }
    }
    let names = names_of(&admin, &form.users).await;
    if form.action.needs_confirmation() && !form.confirmed {
        return Ok(confirm(&admin, &form.action, &form.users, &names));
    }
    let once = pairs
        .iter()
        .find(|(n, _)| n == crate::once::FIELD)
        .map_or("", |(_, v)| v.as_str());
    if !admin.once.claim(once) {
        return Ok(already_done(
            &admin,
            "/users",
            "Its outcome was shown then; the users list has where everyone stands now.",
        ));
    }
    // A few calls at a time: a batch of 500 must not open 500 connections to the server at once.
    let outcomes: Vec<Outcome> = futures::stream::iter(form.users.iter().copied())
        .map(|id| apply(&admin, &form.action, id))
        .buffered(CONCURRENT_CALLS)
        .collect()
        .await;
    let jobs: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Started(j) => Some(j.job_id),
            _ => None,
        })
        .collect();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Refused(_)))
        .count();
    let body = html! {
        div.page-head { div {
            h1 { (form.action.verb()) " " (form.users.len()) " users" }
            p.muted data-testid="batch-summary" {
                (form.users.len() - refused) " done or started, " (refused) " refused"
            }
        } }
        section.card {
            @if !jobs.is_empty() {
                p { a.btn.primary href=(progress_href(&jobs)) data-testid="batch-follow" { "Follow progress of " (jobs.len()) " jobs" } }
            }
            div.table-wrap { table.batch data-testid="batch-results" {
                thead { tr { th scope="col" { "User" } th scope="col" { "Outcome" } } }
                tbody {
                    @for ((id, name), outcome) in form.users.iter().zip(&names).zip(&outcomes) {
                        tr data-user=(name) {
                            td { a href=(format!("/users/{id}")) { strong { (name) } } }
                            td { (outcome_cell(outcome)) }
                        }
                    }
                }
            } }
            p { a.btn href="/users" { "Back to users" } }
        }
    };
    Ok(no_store(page(&admin, "Batch", Nav::Users, body)).into_response())
}

fn outcome_cell(o: &Outcome) -> Markup {
    match o {
        Outcome::Started(j) => html! {
            span data-outcome="started" {
                a href=(format!("/jobs/{}", j.job_id)) { (kind_label(j.kind)) " #" (j.job_id) }
                " " (job_badge(j.state))
            }
        },
        Outcome::Extended(Some(at)) => html! {
            span data-outcome="extended" { "expires " (time::utc(*at)) }
        },
        Outcome::Extended(None) => html! { span data-outcome="extended" { "never expires" } },
        Outcome::Refused(why) => html! { span.bad data-outcome="refused" { (why) } },
    }
}

/// Usernames for the ids, in order (`#id` for one the server does not know: its refusal says
/// why on the result page).
async fn names_of(admin: &Admin, ids: &[UserId]) -> Vec<String> {
    let found: Vec<_> = futures::stream::iter(ids.iter().copied())
        .map(|id| admin.client.get_user(id))
        .buffered(CONCURRENT_CALLS)
        .collect()
        .await;
    found
        .into_iter()
        .zip(ids)
        .map(|(r, id)| {
            r.map(|u| u.forge_username)
                .unwrap_or_else(|_| format!("#{id}"))
        })
        .collect()
}

/// The no-JS-needed confirmation of a batch decommission or redeploy: names every user it will hit and carries
/// the form on, with `confirm=yes`.
fn confirm(admin: &Admin, action: &Action, ids: &[UserId], names: &[String]) -> Response {
    let (title, what, button) = match action {
        Action::Redeploy(profile) => (
            format!("Redeploy {} VMs?", ids.len()),
            format!("The services of these users' VMs are set up again with the profile {profile}, on the same VMs; what runs there now restarts. The URLs and sign-in stay."),
            format!("Redeploy {} VMs", ids.len()),
        ),
        _ => (
            format!("Decommission {} VMs?", ids.len()),
            "The VMs and gateways of these users are deleted and their URLs stop working. Their Forge accounts and VM records (for audit) stay.".to_owned(),
            format!("Decommission {} VMs", ids.len()),
        ),
    };
    let (value, profile) = match action {
        Action::Redeploy(p) => ("redeploy", Some(p)),
        _ => ("decommission", None),
    };
    let body = html! {
        section.card.narrow.center.confirm data-testid="confirm" {
            h1 { (title) }
            p { (what) }
            ul data-testid="confirm-users" { @for n in names { li { (n) } } }
            div.actions {
                form method="post" action="/users/batch" {
                    (csrf_field(admin))
                    input type="hidden" name="action" value=(value);
                    @if let Some(p) = profile { input type="hidden" name="profile" value=(p); }
                    input type="hidden" name="confirm" value="yes";
                    @for id in ids { input type="hidden" name="user" value=(id); }
                    button.danger.solid type="submit" data-testid="confirm-batch" { (button) }
                }
                a.btn href="/users" { "Keep them" }
            }
        }
    };
    no_store(page(admin, &title, Nav::None, body))
}

fn progress_href(jobs: &[i64]) -> String {
    let q: Vec<String> = jobs.iter().map(|j| format!("job={j}")).collect();
    format!("/batches?{}", q.join("&"))
}

/// `GET /batches?job=1&job=2…`: the jobs of one batch, together.
pub async fn progress(
    Extension(admin): Extension<Admin>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> PageResult<Response> {
    let ids = distinct_ids(&pairs, "job", "job id")?;
    if ids.is_empty() || ids.len() > MAX_BATCH {
        return Err(PageError::BadRequest(format!(
            "name 1 to {MAX_BATCH} jobs to follow (job=ID, repeated)"
        )));
    }
    let client = &admin.client;
    let jobs: Vec<Job> = futures::stream::iter(ids.iter().copied())
        .map(|job_id| async move {
            client
                .call::<methods::GetJob>(&JobIdParams { job_id })
                .await
        })
        .buffered(CONCURRENT_CALLS)
        .try_collect()
        .await?;
    let total_steps: usize = jobs.iter().map(|j| j.steps.len()).sum();
    let done_steps: usize = jobs
        .iter()
        .map(|j| {
            if j.state.is_active() {
                j.steps
                    .iter()
                    .filter(|s| matches!(s.state, StepState::Done | StepState::Skipped))
                    .count()
            } else {
                j.steps.len()
            }
        })
        .sum();
    let active = jobs.iter().filter(|j| j.state.is_active()).count();
    let count = |s: JobState| jobs.iter().filter(|j| j.state == s).count();
    let body = html! {
        div.page-head { div {
            h1 { "Batch progress" }
            p.muted data-testid="batch-counts" {
                (jobs.len()) " jobs: " (count(JobState::Succeeded)) " succeeded, "
                (count(JobState::Failed)) " failed, " (count(JobState::Cancelled)) " cancelled, "
                (active) " active"
            }
        } }
        section.card data-refresh-ms=[(active > 0).then_some(REFRESH_MS)] data-testid="batch-progress" data-active=(active) {
            progress.bar max=(total_steps.max(1)) value=(done_steps) aria-label="Overall progress" {}
            div.table-wrap { table.batch {
                thead { tr { th scope="col" { "User" } th scope="col" { "Job" } th scope="col" { "State" } th scope="col" { "Step" } } }
                tbody {
                    @for j in &jobs {
                        tr data-user=(j.forge_username) data-state=(j.state.as_str()) {
                            td { a href=(format!("/users/{}", j.user_id)) { strong { (j.forge_username) } } }
                            td { a href=(format!("/jobs/{}", j.job_id)) { (kind_label(j.kind)) " #" (j.job_id) } }
                            td { (job_badge(j.state)) }
                            td { (step_cell(j)) }
                        }
                    }
                }
            } }
            @if active > 0 { p.muted { "Refreshing every " (REFRESH_MS / 1000) " s while jobs are active. " a href="" { "Refresh now" } } }
        }
    };
    Ok(no_store(page(&admin, "Batch progress", Nav::Jobs, body)).into_response())
}

/// `step 3/12 deploy_vm`, the failure reason, or `—` once succeeded.
fn step_cell(j: &Job) -> Markup {
    let n = j.steps.len();
    let at = j
        .current_step
        .as_ref()
        .and_then(|c| j.steps.iter().find(|s| &s.name == c));
    html! {
        @match (j.state, at) {
            (JobState::Succeeded, _) => span.muted { "all " (n) " steps done" },
            (s, Some(step)) if s.is_active() => { "step " (step.index) "/" (n) " " code { (step.name) } },
            (_, _) if j.error.is_some() => span.bad { (j.error.as_deref().unwrap_or_default()) },
            _ => span.muted { "—" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_form_is_read_strictly() {
        let f = parse(&pairs(&[
            ("csrf", "t"),
            ("action", "extend"),
            ("days", "14"),
            ("user", "3"),
            ("user", "1"),
            ("user", "3"),
        ]))
        .unwrap();
        assert_eq!(f.action, Action::Extend(14));
        assert_eq!(f.users, vec![3, 1], "in order, once each");
        assert!(!f.confirmed);
        for (bad, says) in [
            (vec![("action", "deploy")], "no user selected"),
            (vec![("action", "deploy"), ("user", "x")], "not a user id"),
            (
                vec![("action", "reboot"), ("user", "1")],
                "unknown batch action",
            ),
            (vec![("user", "1")], "no batch action"),
            (
                vec![("action", "extend"), ("days", "0"), ("user", "1")],
                "from 1 to 3650",
            ),
            (
                vec![("action", "extend"), ("days", "-3"), ("user", "1")],
                "from 1 to 3650",
            ),
            (
                vec![("action", "extend"), ("days", "9999"), ("user", "1")],
                "from 1 to 3650",
            ),
            (vec![("action", "extend"), ("user", "1")], "from 1 to 3650"),
            (
                vec![("action", "redeploy"), ("user", "1")],
                "choose the service profile",
            ),
            (
                vec![("action", "redeploy"), ("profile", "  "), ("user", "1")],
                "choose the service profile",
            ),
        ] {
            let err = parse(&pairs(&bad)).err().unwrap().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let f = parse(&pairs(&[
            ("action", "redeploy"),
            ("profile", " minimal "),
            ("confirm", "yes"),
            ("user", "2"),
        ]))
        .unwrap();
        assert_eq!(f.action, Action::Redeploy("minimal".into()));
        assert!(f.confirmed && f.action.needs_confirmation());
        let many: Vec<(String, String)> = std::iter::once(("action".into(), "deploy".into()))
            .chain((0..=MAX_BATCH).map(|i| ("user".into(), i.to_string())))
            .collect();
        assert!(parse(&many).err().unwrap().to_string().contains("at most"));
    }
}
