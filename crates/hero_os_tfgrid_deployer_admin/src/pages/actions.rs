//! State-changing actions. Every one is a POST with a CSRF token; destructive ones need
//! `confirm=yes` (set by the JS confirm dialog, or by the confirmation page this module shows
//! when JS is off). The SDK client acts as the admin, so the server's audit log names them.

use axum::extract::{Form, Path};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use hero_os_tfgrid_deployer_sdk::jobs::{
    ExtendVmParams, ForgetVmParams, JobIdParams, ProvisionVmParams, RedeployVmParams,
};
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::UserIdParams;
use maud::html;
use serde::Deserialize;

use crate::auth::Admin;
use crate::csrf;
use crate::error::{PageError, PageResult};
use crate::layout::{csrf_field, no_store, page, Nav};

#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub confirm: Option<String>,
    /// The form's one-time token ([`crate::once`]), claimed by the actions whose answer is their result page.
    #[serde(default)]
    pub once: String,
}

impl ActionForm {
    fn confirmed(&self) -> bool {
        confirmed(&self.confirm)
    }
}

/// `confirm=yes`: set by the JS confirm dialog or by [`confirm_page`]'s form.
fn confirmed(confirm: &Option<String>) -> bool {
    confirm.as_deref() == Some("yes")
}

/// The answer to a form sent a second time (a reload or Back on a result page): nothing done again.
pub fn already_done(admin: &Admin, back: &str, what: &str) -> Response {
    let body = html! {
        section.card.narrow.center data-testid="already-done" {
            h1 { "Already done" }
            p { "This form was sent before — reloading a result page does not repeat its action. " (what) }
            p { a.btn href=(back) { "Back" } }
        }
    };
    let mut r = no_store(page(admin, "Already done", Nav::None, body));
    *r.status_mut() = axum::http::StatusCode::CONFLICT;
    r
}

/// The no-JS confirmation step.
fn confirm_page(
    admin: &Admin,
    action: &str,
    title: &str,
    question: &str,
    button: &str,
    back: &str,
) -> Response {
    confirm_page_keeping(admin, action, title, question, button, back, &[])
}

/// [`confirm_page`] for a form with fields of its own, posted again as hidden inputs.
fn confirm_page_keeping(
    admin: &Admin,
    action: &str,
    title: &str,
    question: &str,
    button: &str,
    back: &str,
    fields: &[(&str, &str)],
) -> Response {
    let body = html! {
        section.card.narrow.center.confirm data-testid="confirm" {
            h1 { (title) }
            p { (question) }
            div.actions {
                form method="post" action=(action) {
                    (csrf_field(admin))
                    @for (name, value) in fields {
                        input type="hidden" name=(name) value=(value);
                    }
                    input type="hidden" name="confirm" value="yes";
                    button.danger.solid type="submit" { (button) }
                }
                a.btn href=(back) { "Keep it" }
            }
        }
    };
    no_store(page(admin, title, Nav::None, body))
}

pub async fn deploy(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    admin
        .client
        .call::<methods::ProvisionVm>(&ProvisionVmParams {
            user_id: id,
            options: None,
        })
        .await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

pub async fn repair(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    if !f.confirmed() {
        let u = admin.client.get_user(id).await?;
        return Ok(confirm_page(
            &admin,
            &format!("/users/{id}/repair"),
            "Repair VM?",
            &format!(
                "The manifest, sign-in settings and bootstrap of {}'s VM run again on the same VM.",
                u.forge_username
            ),
            "Repair",
            &format!("/users/{id}"),
        ));
    }
    admin
        .client
        .call::<methods::RepairVm>(&UserIdParams { user_id: id })
        .await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct RedeployForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub confirm: Option<String>,
}

/// `POST /users/{id}/redeploy`: the ready VM runs another service profile (a job; the server
/// refuses a profile it does not know, with the known ones).
pub async fn redeploy(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<RedeployForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    if !confirmed(&f.confirm) {
        let u = admin.client.get_user(id).await?;
        let profile = f.profile.trim();
        return Ok(confirm_page_keeping(
            &admin,
            &format!("/users/{id}/redeploy"),
            "Redeploy VM?",
            &format!("{}'s VM is set up again with the profile {profile}, on the same VM; the URL and sign-in stay.", u.forge_username),
            "Redeploy",
            &format!("/users/{id}"),
            &[("profile", profile)],
        ));
    }
    admin
        .client
        .call::<methods::RedeployVm>(&RedeployVmParams {
            user_id: id,
            profile: f.profile.trim().to_owned(),
        })
        .await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct ExtendForm {
    #[serde(default)]
    pub csrf: String,
    /// Whole days; ignored with `never`.
    #[serde(default)]
    pub days: String,
    /// `yes`: never expires.
    #[serde(default)]
    pub never: Option<String>,
}

/// `POST /users/{id}/extend`: N days later, or never (the server audits it).
pub async fn extend(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ExtendForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    let never = f.never.as_deref() == Some("yes");
    let days = if never {
        None
    } else {
        let raw = f.days.trim();
        let max = hero_os_tfgrid_deployer_sdk::jobs::MAX_EXTEND_DAYS;
        Some(
            raw.parse::<u32>()
                .ok()
                .filter(|d| (1..=max).contains(d))
                .ok_or_else(|| {
                    PageError::BadRequest(format!(
                        "extend by {raw:?} days: give a whole number of days from 1 to {max}"
                    ))
                })?,
        )
    };
    admin
        .client
        .call::<methods::ExtendVm>(&ExtendVmParams {
            user_id: id,
            days,
            never,
        })
        .await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

pub async fn decommission(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    if !f.confirmed() {
        let u = admin.client.get_user(id).await?;
        return Ok(confirm_page(
            &admin,
            &format!("/users/{id}/decommission"),
            "Decommission VM?",
            &format!("The VM and gateway of {} are deleted and their URL stops working. The Forge account and the VM record (for audit) stay.", u.forge_username),
            "Decommission",
            &format!("/users/{id}"),
        ));
    }
    admin
        .client
        .call::<methods::DecommissionVm>(&UserIdParams { user_id: id })
        .await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

/// `POST /users/{id}/forget-vm`: drops VM and gateway records whose resources the backend
/// confirms gone (`deployer.forget_vm` without `force`: forcing stays a CLI decision, made
/// with the reason at hand). Confirmed first; the result page says what was forgotten and why.
pub async fn forget_vm(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    if !f.confirmed() {
        let u = admin.client.get_user(id).await?;
        return Ok(confirm_page(
            &admin,
            &format!("/users/{id}/forget-vm"),
            "Forget VM records?",
            &format!("The VM and gateway records of {} are removed, if the backend confirms their resources are gone (otherwise nothing changes and the page says what still exists). The user stays.", u.forge_username),
            "Forget VM records",
            &format!("/users/{id}"),
        ));
    }
    let r = admin
        .client
        .call::<methods::ForgetVm>(&ForgetVmParams {
            user_id: id,
            force: false,
        })
        .await?;
    let body = html! {
        section.card.narrow data-testid="forgotten" {
            h1 { "VM records of " (r.forge_username) " forgotten" }
            @if r.vms.is_empty() && r.gateways.is_empty() { p { "There was nothing left to forget." } }
            ul {
                @for v in &r.vms { li { "VM " code { (v) } } }
                @for g in &r.gateways { li { "gateway " code { (g) } } }
            }
            @if !r.grounds.is_empty() { p.muted { "Why it was safe: " (r.grounds.join("; ")) } }
            p.muted { "OAuth app: " (r.sso_app) }
            p { a.btn href=(format!("/users/{id}")) { "Back to " (r.forge_username) } }
        }
    };
    Ok(no_store(page(
        &admin,
        "VM records forgotten",
        Nav::None,
        body,
    )))
}

pub async fn delete_user(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    if !f.confirmed() {
        let u = admin.client.get_user(id).await?;
        return Ok(confirm_page(
            &admin,
            &format!("/users/{id}/delete"),
            "Forget user?",
            &format!("The deployer's record of {} and the secrets it holds for them are deleted. Their Forge account stays.", u.forge_username),
            "Forget user",
            &format!("/users/{id}"),
        ));
    }
    admin.client.delete_user(id).await?;
    Ok(Redirect::to("/users").into_response())
}

pub async fn cancel_job(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    if !f.confirmed() {
        return Ok(confirm_page(
            &admin,
            &format!("/jobs/{id}/cancel"),
            "Cancel job?",
            &format!(
                "Job #{id} stops at its current step; a deploy cleans up what it already made."
            ),
            "Cancel job",
            &format!("/jobs/{id}"),
        ));
    }
    let job = admin
        .client
        .call::<methods::CancelJob>(&JobIdParams { job_id: id })
        .await?;
    Ok(Redirect::to(&format!("/users/{}", job.user_id)).into_response())
}

pub async fn retry_job(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    let job = admin
        .client
        .call::<methods::RetryJob>(&JobIdParams { job_id: id })
        .await?;
    Ok(Redirect::to(&format!("/users/{}", job.user_id)).into_response())
}

/// Shows the initial password (POST only, never GET; `no-store`; audited by the server).
pub async fn reveal_password(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    let r = admin.client.reveal_initial_password(id).await?;
    let body = html! {
        section.card.narrow.center data-testid="revealed" {
            p.muted { a href=(format!("/users/{id}")) { "← " (r.forge_username) } }
            h1 { "Initial password of " (r.forge_username) }
            p { "Deliver it " strong { "out of band" } ", e.g. in a direct chat message; never together with the URL. This reveal was recorded in the audit log." }
            div.secret {
                output #initial-password data-testid="initial-password" { (r.initial_password) }
                button type="button" data-copy-target="initial-password" hidden { "Copy" }
            }
        }
    };
    Ok(no_store(page(&admin, "Initial password", Nav::Users, body)))
}

/// Sets a new Forge password through the server (Forge admin API; audited) and shows it once.
/// Destructive (the current password stops working), so it is confirmed like the others.
pub async fn reset_password(
    Extension(admin): Extension<Admin>,
    Path(id): Path<i64>,
    Form(f): Form<ActionForm>,
) -> PageResult<Response> {
    csrf::check(&admin, &f.csrf)?;
    if !f.confirmed() {
        let u = admin.client.get_user(id).await?;
        return Ok(confirm_page(
            &admin,
            &format!("/users/{id}/reset-password"),
            "Reset Forge password?",
            &format!("{} gets a new random Forge password; the current one stops working. The new one is shown once.", u.forge_username),
            "Reset password",
            &format!("/users/{id}"),
        ));
    }
    if !admin.once.claim(&f.once) {
        return Ok(already_done(&admin, &format!("/users/{id}"), "The password was reset when this form was first sent; the new one was shown then. Reset again from the user's page if it was lost."));
    }
    let r = admin.client.reset_forge_password(id).await?;
    let body = html! {
        section.card.narrow.center data-testid="password-reset" {
            p.muted { a href=(format!("/users/{id}")) { "← " (r.forge_username) } }
            h1 { "New Forge password of " (r.forge_username) }
            p { "Shown once. Deliver it " strong { "out of band" } ", e.g. in a direct chat message; never together with the URL. The reset was recorded in the audit log." }
            div.secret {
                output #new-password data-testid="new-password" { (r.new_password) }
                button type="button" data-copy-target="new-password" hidden { "Copy" }
            }
        }
    };
    Ok(no_store(page(
        &admin,
        "New Forge password",
        Nav::Users,
        body,
    )))
}
