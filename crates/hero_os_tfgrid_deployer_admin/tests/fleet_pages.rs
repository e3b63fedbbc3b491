//! The fleet on the dashboard, in-process (`oneshot` on the router) against the REAL deployer
//! server, dev Forge and local backend: the users list's health badge, time left and "expiring
//! within 7 days" filter; batch deploy / extend / decommission over selected rows with one
//! refusal among them and the combined progress page; and a ready VM's Redeploy and Extend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use hero_os_tfgrid_deployer_admin::auth::AuthMode;
use hero_os_tfgrid_deployer_admin::router;
use hero_os_tfgrid_deployer_sdk::jobs::{JobKind, JobState, ListJobsParams, ProvisionOptions};
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::Client;
use support::oneshot::{self, csrf_of};
use support::Stack;

async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    let r = oneshot::get(app, path, Some("alice")).await;
    (r.status, r.text)
}

/// Posts `form` as a freshly rendered form would: with a new one-time token unless it names one.
async fn post(app: &Router, path: &str, form: &[(&str, String)]) -> (StatusCode, String) {
    let once = hero_os_tfgrid_deployer_admin::once::OnceTokens::issue();
    let mut pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if !pairs.iter().any(|(k, _)| *k == "once") {
        pairs.push(("once", &once));
    }
    let r = oneshot::post(app, path, "alice", &pairs).await;
    (r.status, r.text)
}

/// The `<tr data-user="name">…</tr>` of `name` in a page.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("data-user=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name}: {html}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

/// Job ids of a batch result page's "Follow progress" link.
fn followed_jobs(html: &str) -> Vec<i64> {
    let i = html.find("href=\"/batches?").expect("a progress link") + 6;
    let end = html[i..].find('"').unwrap() + i;
    html[i..end]
        .trim_start_matches("/batches?")
        .split("&amp;")
        .map(|kv| kv.trim_start_matches("job=").parse().unwrap())
        .collect()
}

async fn wait_jobs(c: &Client, jobs: &[i64]) {
    for j in jobs {
        let job = tokio::time::timeout(Duration::from_secs(180), c.follow_job(*j, |_| {}))
            .await
            .expect("the job ends")
            .unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_batches_and_vm_care_against_the_real_server() {
    let stack = Stack::start().await;
    stack.set_allowlist("alice").await;
    let app = router(stack.state(AuthMode::Headers));
    let c = &stack.client;
    let mut ids = std::collections::HashMap::new();
    for name in ["ann", "ben", "cat", "dan"] {
        ids.insert(name, c.create_user(name, None, None).await.unwrap().user_id);
    }
    // cat's VM expires in 3 days, straight through the SDK.
    let cat_job = c
        .call::<methods::ProvisionVm>(&hero_os_tfgrid_deployer_sdk::jobs::ProvisionVmParams {
            user_id: ids["cat"],
            options: Some(ProvisionOptions {
                expires_in_days: Some(3),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    wait_jobs(c, &[cat_job.job_id]).await;

    // The list: selectable rows in one batch form; no VM yet for ann.
    let (status, html) = get(&app, "/users").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&html);
    assert!(html.contains("action=\"/users/batch\""), "{html}");
    assert!(row(&html, "ann").contains(&format!("name=\"user\" value=\"{}\"", ids["ann"])));

    // Batch deploy of ann and ben, with cat (who has a ready VM) among them: two jobs start, cat
    // is refused with the server's own words, and nothing stops at the refusal.
    let (status, html) = post(
        &app,
        "/users/batch",
        &[
            ("csrf", csrf.clone()),
            ("action", "deploy".into()),
            ("user", ids["ann"].to_string()),
            ("user", ids["cat"].to_string()),
            ("user", ids["ben"].to_string()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("2 done or started, 1 refused"), "{html}");
    assert!(row(&html, "ann").contains("data-outcome=\"started\""));
    assert!(row(&html, "ben").contains("data-outcome=\"started\""));
    let refused = row(&html, "cat");
    assert!(
        refused.contains("data-outcome=\"refused\"") && refused.contains("already has a ready VM"),
        "{refused}"
    );
    let jobs = followed_jobs(&html);
    assert_eq!(jobs.len(), 2, "{html}");
    // The combined progress page: a line per user, one overall bar.
    let progress = format!(
        "/batches?{}",
        jobs.iter()
            .map(|j| format!("job={j}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    let (status, html) = get(&app, &progress).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("progress") && row(&html, "ann").contains("deploy #"));
    wait_jobs(c, &jobs).await;
    let (_, html) = get(&app, &progress).await;
    assert!(
        html.contains("2 jobs: 2 succeeded, 0 failed, 0 cancelled, 0 active"),
        "{html}"
    );
    assert!(
        html.contains("data-active=\"0\"") && !html.contains("data-refresh-ms"),
        "{html}"
    );
    for bad in ["/batches", "/batches?job=x", "/batches?job=999999"] {
        let (status, _) = get(&app, bad).await;
        assert!(status.is_client_error(), "{bad}: {status}");
    }

    // Health badges and time left on the list; the 7-day filter holds exactly cat.
    c.check_health(None).await.unwrap();
    let (_, html) = get(&app, "/users").await;
    for name in ["ann", "ben", "cat"] {
        assert!(
            row(&html, name).contains("data-health=\"healthy\""),
            "{name}: {html}"
        );
    }
    assert!(
        row(&html, "ann").contains("d left"),
        "{}",
        row(&html, "ann")
    );
    assert!(
        row(&html, "cat").contains("badge warn"),
        "{}",
        row(&html, "cat")
    );
    assert!(
        !row(&html, "dan").contains("data-health"),
        "no VM, no badge"
    );
    let (_, html) = get(&app, "/users?expiring=7").await;
    assert!(html.contains("data-user=\"cat\""), "{html}");
    for name in ["ann", "ben", "dan"] {
        assert!(
            !html.contains(&format!("data-user=\"{name}\"")),
            "{name}: {html}"
        );
    }
    assert!(html.contains("checked"), "the filter shows as on");

    // Batch extend: cat by 14 days leaves the 7-day window; a bad day count is refused whole.
    let (status, _) = post(
        &app,
        "/users/batch",
        &[
            ("csrf", csrf.clone()),
            ("action", "extend".into()),
            ("days", "0".into()),
            ("user", ids["cat"].to_string()),
        ],
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    let (status, html) = post(
        &app,
        "/users/batch",
        &[
            ("csrf", csrf.clone()),
            ("action", "extend".into()),
            ("days", "14".into()),
            ("user", ids["cat"].to_string()),
            ("user", ids["dan"].to_string()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        row(&html, "cat").contains("data-outcome=\"extended\""),
        "{html}"
    );
    assert!(
        row(&html, "dan").contains("data-outcome=\"refused\""),
        "dan has no VM: {html}"
    );
    let (_, html) = get(&app, "/users?expiring=7").await;
    assert!(html.contains("No VM expires within 7 days."), "{html}");
    // A reload of a batch's result page sends the same form again: refused, nothing extended twice. Before,
    // the CSRF token still being valid, every reload added the days again.
    let expires = |html: &str| row(html, "cat").split("expires").nth(1).map(str::to_owned);
    let (_, before) = get(&app, "/users").await;
    let form = [
        ("csrf", csrf.clone()),
        (
            "once",
            hero_os_tfgrid_deployer_admin::once::OnceTokens::issue(),
        ),
        ("action", "extend".into()),
        ("days", "3".into()),
        ("user", ids["cat"].to_string()),
    ];
    let (status, html) = post(&app, "/users/batch", &form).await;
    assert_eq!(status, 200, "{html}");
    let (_, once_extended) = get(&app, "/users").await;
    assert_ne!(expires(&before), expires(&once_extended));
    let (status, html) = post(&app, "/users/batch", &form).await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("data-testid=\"already-done\""), "{html}");
    let (_, after) = get(&app, "/users").await;
    assert_eq!(
        expires(&once_extended),
        expires(&after),
        "not extended again"
    );
    // The one-VM form has the batch's bound (the server's): over ten years is refused, nothing extended.
    for days in ["3651", "4000000000"] {
        let (status, html) = post(
            &app,
            &format!("/users/{}/extend", ids["cat"]),
            &[("csrf", csrf.clone()), ("days", days.into())],
        )
        .await;
        assert_eq!(status, 400, "{days}: {html}");
        assert!(html.contains("from 1 to 3650"), "{html}");
    }

    // Without the CSRF token nothing happens.
    let (status, _) = post(
        &app,
        "/users/batch",
        &[
            ("action", "deploy".into()),
            ("user", ids["dan"].to_string()),
        ],
    )
    .await;
    assert_eq!(status, 403);
    // …and the token is checked before the fields are read: a cross-site post of a huge or broken form is a 403
    // too, not a parse of 150 000 ids.
    for users in [
        vec!["x".to_string()],
        (0..150_000).map(|i| i.to_string()).collect(),
    ] {
        let mut form = vec![("action", "deploy".to_string())];
        form.extend(users.into_iter().map(|u| ("user", u)));
        let (status, _) = post(&app, "/users/batch", &form).await;
        assert_eq!(status, 403);
    }
    // With the token, a batch past the bound is refused whole.
    let mut form = vec![("csrf", csrf.clone()), ("action", "deploy".to_string())];
    form.extend((0..150_000).map(|i| ("user", (i % 1000).to_string())));
    let (status, html) = post(&app, "/users/batch", &form).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("at most 500"), "{html}");

    // A ready VM's care card: redeploy with a profile the server knows (a redeploy job), a
    // refusal for one it does not, and "never expire".
    let ann = format!("/users/{}", ids["ann"]);
    let (_, html) = get(&app, &ann).await;
    assert!(html.contains("data-testid=\"vm-care\""), "{html}");
    assert!(html.contains("<option value=\"demo\" selected>"), "{html}");
    let (status, html) = post(
        &app,
        &format!("{ann}/redeploy"),
        &[
            ("csrf", csrf.clone()),
            ("profile", "nope".into()),
            ("confirm", "yes".into()),
        ],
    )
    .await;
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("unknown manifest profile"), "{html}");
    // Without JavaScript the confirmation page comes first, carrying the chosen profile on.
    let (status, html) = post(
        &app,
        &format!("{ann}/redeploy"),
        &[("csrf", csrf.clone()), ("profile", "demo".into())],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("data-testid=\"confirm\"")
            && html.contains("name=\"profile\" value=\"demo\""),
        "{html}"
    );
    let (status, _) = post(
        &app,
        &format!("{ann}/redeploy"),
        &[
            ("csrf", csrf.clone()),
            ("profile", "demo".into()),
            ("confirm", "yes".into()),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let job = c
        .call::<methods::ListJobs>(&ListJobsParams {
            user_id: Some(ids["ann"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!((job.kind, job.actor.as_str()), (JobKind::Redeploy, "alice"));
    wait_jobs(c, &[job.job_id]).await;
    let (status, _) = post(
        &app,
        &format!("{ann}/extend"),
        &[("csrf", csrf.clone()), ("never", "yes".into())],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(
        c.get_vm(ids["ann"]).await.unwrap().vm.unwrap().expires_at,
        None
    );

    // Batch redeploy: offered with the server's profiles; an unknown profile is refused whole before anything is
    // asked; a known one asks first, naming everyone and carrying the profile; confirmed, a redeploy job per user
    // with a ready VM and a refusal for dan, who has none.
    let (_, html) = get(&app, "/users").await;
    assert!(
        html.contains("data-testid=\"batch-redeploy\"")
            && html.contains("<option value=\"demo\" selected>"),
        "{html}"
    );
    let redeploy = |profile: &str, confirm: bool| {
        let mut form = vec![
            ("csrf", csrf.clone()),
            ("action", "redeploy".to_string()),
            ("profile", profile.to_string()),
        ];
        if confirm {
            form.push(("confirm", "yes".into()));
        }
        for name in ["ann", "ben", "dan"] {
            form.push(("user", ids[name].to_string()));
        }
        form
    };
    let (status, html) = post(&app, "/users/batch", &redeploy("nope", true)).await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains("unknown service profile &quot;nope&quot;; the server knows: demo"),
        "{html}"
    );
    let (status, html) = post(&app, "/users/batch", &redeploy("demo", false)).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Redeploy 3 VMs?")
            && html.contains("<li>dan</li>")
            && html.contains("name=\"profile\" value=\"demo\"")
            && html.contains("name=\"confirm\" value=\"yes\""),
        "{html}"
    );
    let (status, html) = post(&app, "/users/batch", &redeploy("demo", true)).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("2 done or started, 1 refused"), "{html}");
    assert!(
        row(&html, "dan").contains("data-outcome=\"refused\""),
        "{html}"
    );
    let jobs = followed_jobs(&html);
    assert_eq!(jobs.len(), 2, "{html}");
    for job in &jobs {
        let j = c.get_job(*job).await.unwrap();
        assert_eq!((j.kind, j.actor.as_str()), (JobKind::Redeploy, "alice"));
    }
    wait_jobs(c, &jobs).await;
    for name in ["ann", "ben"] {
        let vm = c.get_vm(ids[name]).await.unwrap().vm.unwrap();
        assert_eq!(vm.profile.as_deref(), Some("demo"), "{name}");
    }

    // Batch decommission asks first, naming everyone; confirmed, it starts a job per user.
    let (status, html) = post(
        &app,
        "/users/batch",
        &[
            ("csrf", csrf.clone()),
            ("action", "decommission".into()),
            ("user", ids["ann"].to_string()),
            ("user", ids["ben"].to_string()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Decommission 2 VMs?") && html.contains("<li>ben</li>"),
        "{html}"
    );
    let listed = c.list_vms(None).await.unwrap();
    assert_eq!(
        listed.vms.len(),
        3,
        "nothing decommissioned before the confirmation"
    );
    let (_, html) = post(
        &app,
        "/users/batch",
        &[
            ("csrf", csrf.clone()),
            ("action", "decommission".into()),
            ("confirm", "yes".into()),
            ("user", ids["ann"].to_string()),
            ("user", ids["ben"].to_string()),
        ],
    )
    .await;
    let jobs = followed_jobs(&html);
    assert_eq!(jobs.len(), 2, "{html}");
    wait_jobs(c, &jobs).await;

    // Forget VM records: never offered for a ready VM, and refused by the server for one (the
    // backend says it still exists); asked first; for a user with nothing left, says so.
    let cat = format!("/users/{}", ids["cat"]);
    let (_, html) = get(&app, &cat).await;
    assert!(!html.contains("/forget-vm"), "{html}");
    let (status, html) = post(&app, &format!("{cat}/forget-vm"), &[("csrf", csrf.clone())]).await;
    assert_eq!(status, 200);
    assert!(html.contains("Forget VM records?"), "asks first: {html}");
    let (status, html) = post(
        &app,
        &format!("{cat}/forget-vm"),
        &[("csrf", csrf.clone()), ("confirm", "yes".into())],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("still"), "{html}");
    assert_eq!(c.list_vms(Some("cat".into())).await.unwrap().vms.len(), 1);
    let (status, html) = post(
        &app,
        &format!("{ann}/forget-vm"),
        &[("csrf", csrf.clone()), ("confirm", "yes".into())],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("nothing left to forget"), "{html}");
    support::decommission_all(c).await;
}
