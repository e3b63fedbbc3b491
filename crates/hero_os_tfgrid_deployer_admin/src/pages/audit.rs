//! Audit: the server's append-only event log, filtered by actor, user and action.

use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hero_os_tfgrid_deployer_sdk::types::ListEventsParams;
use maud::html;
use serde::Deserialize;

use super::href;
use crate::auth::Admin;
use crate::error::PageResult;
use crate::layout::{no_store, page, Nav};
use crate::time;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    pub actor: Option<String>,
    /// Username (prefix of the subject `user:<name>`).
    #[serde(default)]
    pub user: Option<String>,
    /// Action prefix, e.g. `user.` or `job.`.
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub before: Option<i64>,
}

fn clean(s: &Option<String>) -> String {
    s.as_deref().map(str::trim).unwrap_or("").to_owned()
}

pub async fn list(
    Extension(admin): Extension<Admin>,
    Query(q): Query<AuditQuery>,
) -> PageResult<Response> {
    let (actor, user, action) = (clean(&q.actor), clean(&q.user), clean(&q.action));
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    let events = admin
        .client
        .list_events(&ListEventsParams {
            actor: some(&actor),
            subject: some(&user).map(|u| format!("user:{u}")),
            user: None,
            action: some(&action),
            before: q.before,
            limit: Some(100),
        })
        .await?;
    let filters = [
        ("actor", actor.clone()),
        ("user", user.clone()),
        ("action", action.clone()),
    ];
    let older = events.next_before.map(|b| {
        let mut next = filters.to_vec();
        next.push(("before", b.to_string()));
        href("/audit", &next)
    });
    let body = html! {
        div.page-head { div { h1 { "Audit log" } p.muted { "Who did what, newest first. Append-only; secrets never appear here." } } }
        section.card {
            form.filters method="get" action="/audit" {
                div { label for="actor" { "Actor" } input #actor type="text" name="actor" value=(actor) placeholder="exact, e.g. alice"; }
                div { label for="user" { "User" } input #user type="text" name="user" value=(user) placeholder="username prefix"; }
                div { label for="action" { "Action" } input #action type="text" name="action" value=(action) placeholder="prefix, e.g. user. or job."; }
                div.actions { button.primary type="submit" { "Filter" } a.btn href="/audit" { "Reset" } }
            }
        }
        section.card {
            @if events.events.is_empty() { div.empty { "No events match." } } @else {
                div.table-wrap { table.audit data-testid="audit-table" {
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" }
                        th scope="col" { "Subject" } th scope="col" { "Outcome" } th scope="col" .hide-sm { "Detail" }
                    } }
                    tbody { @for e in &events.events { tr {
                        td.num { (time::utc(e.at)) }
                        td { a href=(href("/audit", &[("actor", e.actor.clone())])) { (e.actor) } }
                        td { code { (e.action) } }
                        td { @if let Some(u) = e.subject.strip_prefix("user:") {
                            a href=(href("/audit", &[("user", u.to_owned())])) { (e.subject) }
                        } @else { (e.subject) } }
                        td { @if e.outcome == "ok" { span.badge.ok { "ok" } } @else { span.badge.bad { (e.outcome) } } }
                        td.hide-sm.muted { @if let Some(d) = &e.detail { (d) } }
                    } } }
                } }
            }
            nav.pager aria-label="Pages" {
                span {}
                div.actions {
                    @if q.before.is_some() { a.btn href=(href("/audit", &filters)) { "← Newest" } }
                    @if let Some(older) = &older { a.btn rel="next" href=(older) { "Older →" } }
                }
            }
        }
    };
    Ok(no_store(page(&admin, "Audit", Nav::Audit, body)).into_response())
}
