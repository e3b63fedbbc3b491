//! Create user: a form validated inline with the SDK's username rules (the same function the
//! server uses; `app.js` mirrors it for instant feedback), and a result panel that shows the
//! initial password once.

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hero_os_tfgrid_deployer_sdk::types::CreateUserResult;
use hero_os_tfgrid_deployer_sdk::username::{self, MAX_LEN, RESERVED, TEST_PREFIX};
use hero_os_tfgrid_deployer_sdk::ErrorKind;
use maud::{html, Markup};
use serde::Deserialize;

use crate::auth::Admin;
use crate::error::{PageError, PageResult};
use crate::layout::{csrf_field, no_store, notice, page, Nav};

#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
}

/// Problems to show next to the fields, and above the form.
#[derive(Debug, Default)]
pub struct FormErrors {
    pub username: Option<String>,
    pub email: Option<String>,
    pub general: Option<Markup>,
}

pub async fn form(Extension(admin): Extension<Admin>) -> Response {
    render_form(
        &admin,
        &CreateForm::default(),
        &FormErrors::default(),
        StatusCode::OK,
    )
}

fn render_form(admin: &Admin, f: &CreateForm, errors: &FormErrors, status: StatusCode) -> Response {
    let body = html! {
        div.page-head { div {
            h1 { "New user" }
            p.muted { "Creates (or adopts) the person's Forge account and mints their API token. Deploy their VM afterwards." }
        } }
        section.card.narrow {
            @if let Some(g) = &errors.general { (notice("bad", "Could not create the user", g.clone())) }
            form.stack method="post" action="/users" novalidate {
                (csrf_field(admin))
                div {
                    label for="username" { "Username" }
                    input #username type="text" name="username" value=(f.username) required
                        autocomplete="off" autocapitalize="none" spellcheck="false" maxlength=(MAX_LEN * 2)
                        aria-describedby="username-error username-hint"
                        aria-invalid=(if errors.username.is_some() { "true" } else { "false" })
                        data-username-rules="" data-max=(MAX_LEN) data-test-prefix=(TEST_PREFIX)
                        data-reserved=(RESERVED.join(","));
                    div #username-error .field-error aria-live="polite" { @if let Some(e) = &errors.username { (e) } }
                    div #username-hint .hint {
                        "Their Forge login and the name in their demo URL: lowercase a–z, 0–9 and “-”, at most " (MAX_LEN) " characters."
                    }
                }
                div {
                    label for="display_name" { "Full name " span.muted { "(optional)" } }
                    input #display_name type="text" name="display_name" value=(f.display_name) autocomplete="off";
                }
                div {
                    label for="email" { "Email " span.muted { "(optional)" } }
                    input #email type="email" name="email" value=(f.email) autocomplete="off"
                        aria-describedby="email-error email-hint"
                        aria-invalid=(if errors.email.is_some() { "true" } else { "false" });
                    div #email-error .field-error aria-live="polite" { @if let Some(e) = &errors.email { (e) } }
                    div #email-hint .hint { "Leave empty to use a placeholder address; nobody is emailed." }
                }
                div.actions { button.primary type="submit" { "Create user" } a.btn href="/users" { "Cancel" } }
            }
        }
    };
    (
        status,
        no_store(page(admin, "New user", Nav::NewUser, body)),
    )
        .into_response()
}

/// Server-side checks, with the SDK's rules.
pub fn check(f: &CreateForm) -> FormErrors {
    let mut e = FormErrors::default();
    if let Err(err) = username::validate(&f.username) {
        e.username = Some(err.to_string());
    }
    let email = f.email.trim();
    if !email.is_empty() {
        let ok = email.len() <= 254
            && email.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
            })
            && !email.chars().any(|c| c.is_whitespace());
        if !ok {
            e.email = Some("email must look like name@example.org".into());
        }
    }
    e
}

pub async fn submit(
    Extension(admin): Extension<Admin>,
    Form(f): Form<CreateForm>,
) -> PageResult<Response> {
    crate::csrf::check(&admin, &f.csrf)?;
    let errors = check(&f);
    if errors.username.is_some() || errors.email.is_some() {
        return Ok(render_form(
            &admin,
            &f,
            &errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    let opt = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    };
    let display = opt(&f.display_name);
    let email = opt(&f.email);
    match admin
        .client
        .create_user(&f.username, display.as_deref(), email.as_deref())
        .await
    {
        Ok(r) => Ok(render_result(&admin, &r)),
        Err(e) => {
            let kind = e.kind();
            // SDK error messages are safe to show: the server never puts a secret in one.
            let message = match &e {
                hero_os_tfgrid_deployer_sdk::ClientError::Rpc(r) => r.message.clone(),
                other => other.to_string(),
            };
            let status = PageError::Sdk(e).status();
            let mut errors = FormErrors::default();
            match kind {
                Some(ErrorKind::AlreadyExists) => {
                    let found = admin.client.find_user(&f.username).await.ok();
                    errors.general = Some(html! {
                        "The deployer already manages " strong { (f.username) } ". "
                        @if let Some(u) = found { a href=(format!("/users/{}", u.user_id)) { "Open their page" } "." }
                    });
                }
                Some(ErrorKind::InvalidUsername | ErrorKind::ForgeConflict) => {
                    errors.username = Some(message);
                }
                _ => errors.general = Some(html! { (message) }),
            }
            Ok(render_form(&admin, &f, &errors, status))
        }
    }
}

fn render_result(admin: &Admin, r: &CreateUserResult) -> Response {
    let user_url = format!("/users/{}", r.user_id);
    let body = html! {
        div.page-head { div {
            h1 { "User " (r.forge_username) " is ready for a VM" }
            p.muted { @if r.adopted { "An existing Forge account was adopted." } @else { "A new Forge account was created." } }
        } }
        @if hero_os_tfgrid_deployer_sdk::username::is_test_user(&r.forge_username) {
            div.notice.warn role="status" data-testid="test-user-warning" {
                strong { "Test user" }
                div { "Names starting with " code { (hero_os_tfgrid_deployer_sdk::username::TEST_PREFIX) }
                    " are throw-away users of end-to-end runs against a real Forge, not accounts for people." }
            }
        }
        section.card.narrow data-testid="create-result" {
            @if let Some(pw) = &r.initial_password {
                h2 { "Initial password" }
                p { "Shown " strong { "once" } " here. Deliver it " strong { "out of band" }
                    " — for example in a direct chat message to the person, never in the same channel as the URL." }
                div.secret {
                    output #initial-password data-testid="initial-password" { (pw) }
                    button type="button" data-copy-target="initial-password" hidden { "Copy" }
                }
                p.hint { "Later, “Reveal password” on the user's page shows it again (audited)." }
            } @else {
                (notice("warn", "No password to hand over", html! {
                    "This Forge account existed before, so its password is not known to the deployer. The person signs in with their own."
                }))
            }
            dl.facts {
                dt { "Forge login" } dd { code { (r.forge_username) } }
                dt { "Forge API token" }
                dd data-testid="token-state" {
                    @if r.forge_token_set { span.badge.ok { "set" } " held in the secret store" }
                    @else {
                        span.badge.warn { "not set" }
                        @if let Some(n) = &r.forge_token_note { " " span.muted { (n) } }
                    }
                }
            }
            div.actions {
                form method="post" action=(format!("{user_url}/deploy")) {
                    (csrf_field(admin))
                    button.primary type="submit" { "Deploy VM now" }
                }
                a.btn href=(user_url) { "Open user" }
                a.btn href="/users/new" { "Create another" }
            }
        }
    };
    no_store(page(admin, "User created", Nav::NewUser, body))
}
