//! The page shell, navigation and small shared pieces (badges, flashes).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use hero_os_tfgrid_deployer_sdk::jobs::{HealthState, JobState, StepState};
use hero_os_tfgrid_deployer_sdk::types::VmStatus;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::assets;
use crate::auth::Admin;

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Users,
    NewUser,
    Jobs,
    Audit,
    None,
}

/// A complete page for a signed-in admin.
pub fn page(admin: &Admin, title: &str, nav: Nav, body: Markup) -> Markup {
    shell(title, Some(admin), admin.dev, nav, body)
}

/// A complete page; `admin` is None on 401/403/404 pages.
pub fn shell(title: &str, admin: Option<&Admin>, dev: bool, nav: Nav, body: Markup) -> Markup {
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            a href=(href) aria-current=[(nav == n).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Hero OS deployer" }
                link rel="stylesheet" href=(assets::CSS_PATH);
                link rel="icon" href=(assets::ICON_PATH) type="image/svg+xml";
                @if let Some(a) = admin {
                    meta name="csrf-token" content=(a.csrf);
                }
                script src=(assets::JS_PATH) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                @if dev {
                    div.dev-banner role="note" {
                        strong { "Development mode." }
                        " Identity is not verified; never expose this instance."
                    }
                }
                header.topbar {
                    a.brand href="/users" {
                        (PreEscaped(assets::LOGO_SVG))
                        span { "Hero OS " span.muted { "deployer" } }
                    }
                    @if admin.is_some() {
                        nav aria-label="Main" {
                            (item(Nav::Users, "/users", "Users"))
                            (item(Nav::NewUser, "/users/new", "New user"))
                            (item(Nav::Jobs, "/jobs", "Jobs"))
                            (item(Nav::Audit, "/audit", "Audit"))
                        }
                    }
                    @if let Some(a) = admin {
                        div.who title=(format!("signed in via {}", a.via)) {
                            span.avatar aria-hidden="true" { (initial(&a.user)) }
                            span { (a.user) }
                        }
                    }
                }
                main id="main" { (body) }
                footer.footer { "Hero OS demo VMs on the ThreeFold Grid · admin dashboard v" (env!("CARGO_PKG_VERSION")) }
            }
        }
    }
}

fn initial(user: &str) -> String {
    user.chars()
        .next()
        .map(|c| c.to_ascii_uppercase().to_string())
        .unwrap_or_default()
}

/// A rendered page with `Cache-Control: no-store` (pages showing secrets, and every admin page:
/// they reflect live state).
pub fn no_store(markup: Markup) -> Response {
    let mut r = markup.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The hidden CSRF field.
/// The hidden fields every form carries: the admin's CSRF token and a fresh one-time token ([`crate::once`]).
pub fn csrf_field(admin: &Admin) -> Markup {
    html! {
        input type="hidden" name=(crate::csrf::FIELD) value=(admin.csrf);
        input type="hidden" name=(crate::once::FIELD) value=(crate::once::OnceTokens::issue());
    }
}

pub fn vm_badge(s: VmStatus) -> Markup {
    let (class, label) = match s {
        VmStatus::NoVm => ("neutral", "no VM"),
        VmStatus::Provisioning => ("info", "provisioning"),
        VmStatus::Ready => ("ok", "ready"),
        VmStatus::Failed => ("bad", "failed"),
        VmStatus::Decommissioning => ("info", "decommissioning"),
        VmStatus::Decommissioned => ("neutral", "decommissioned"),
    };
    html! { span class={"badge " (class)} data-status=(s.as_str()) { (label) } }
}

/// The health watch's verdict of a ready VM, as a badge (`None`: not probed yet); a VM that
/// is down says since when, the first thing an operator asks.
pub fn health_badge(h: Option<HealthState>, since: Option<i64>) -> Markup {
    match h {
        Some(HealthState::Healthy) => html! { span.badge.ok data-health="healthy" { "healthy" } },
        Some(HealthState::Unreachable) => html! {
            span.badge.bad data-health="unreachable" {
                @match since { Some(t) => { "down since " (crate::time::utc(t)) }, None => "unreachable" }
            }
        },
        None => html! { span.muted data-health="unknown" { "not probed" } },
    }
}

/// A live VM's expiry as time left (`never` when it does not expire); within 7 days it is a
/// warning badge, so the rows to act on stand out.
pub fn expiry_cell(at: Option<i64>, now: i64) -> Markup {
    match at {
        None => html! { span.muted data-expires="never" { "never" } },
        Some(at) if at - now <= 7 * 86_400 => html! {
            span.badge.warn data-expires=(at) title=(crate::time::utc(at)) { (crate::time::left(at, now)) }
        },
        Some(at) => html! {
            span data-expires=(at) title=(crate::time::utc(at)) { (crate::time::left(at, now)) }
        },
    }
}

pub fn job_state_str(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelling => "cancelling",
        JobState::Cancelled => "cancelled",
    }
}

pub fn job_badge(s: JobState) -> Markup {
    let class = match s {
        JobState::Queued | JobState::Running | JobState::Cancelling => "info",
        JobState::Succeeded => "ok",
        JobState::Failed => "bad",
        JobState::Cancelled => "neutral",
    };
    html! { span class={"badge " (class)} data-job-state=(job_state_str(s)) { (job_state_str(s)) } }
}

pub fn step_state_str(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "pending",
        StepState::Running => "running",
        StepState::Done => "done",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
    }
}

/// A notice box: `kind` is `ok`, `bad`, `info` or `warn`.
pub fn notice(kind: &str, title: &str, body: Markup) -> Markup {
    html! {
        div class={"notice " (kind)} role=(if kind == "bad" { "alert" } else { "status" }) {
            strong { (title) }
            div { (body) }
        }
    }
}

#[cfg(test)]
mod badge_tests {
    use super::*;

    #[test]
    fn a_down_vm_says_since_when_and_expiry_warns_within_a_week() {
        let t = 1_800_000_000;
        let down = health_badge(Some(HealthState::Unreachable), Some(t)).into_string();
        assert!(down.contains("down since 2027-01-15"), "{down}");
        let unknown_since = health_badge(Some(HealthState::Unreachable), None).into_string();
        assert!(unknown_since.contains(">unreachable<"), "{unknown_since}");
        assert!(health_badge(None, None)
            .into_string()
            .contains("not probed"));
        assert!(expiry_cell(Some(t + 6 * 86_400), t)
            .into_string()
            .contains("badge warn"));
        assert!(!expiry_cell(Some(t + 8 * 86_400), t)
            .into_string()
            .contains("badge warn"));
        assert!(expiry_cell(None, t).into_string().contains("never"));
    }
}
