//! Handler-level tests of every route, in-process (`oneshot` on the router) against the REAL
//! deployer server and dev Forge binaries, plus the dashboard binary's listeners.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hero_identity::{AssertionPayload, AssertionSigner, Claim};
use hero_os_tfgrid_deployer_admin::auth::AuthMode;
use hero_os_tfgrid_deployer_admin::router;
use hero_os_tfgrid_deployer_sdk::jobs::ListJobsParams;
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::ListEventsParams;
use support::oneshot::{csrf_of, get, post, send, Resp};
use support::Stack;

fn no_store(r: &Resp) -> bool {
    r.headers.get("cache-control").and_then(|v| v.to_str().ok()) == Some("no-store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_against_the_real_server() {
    let stack = Stack::start().await;
    stack.set_allowlist("alice, Erin").await;
    let app = router(stack.state(AuthMode::Headers));

    // Service endpoints need no identity.
    let r = get(&app, "/health", None).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("\"ok\""));
    let r = get(&app, "/.well-known/heroservice.json", None).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(v["protocol"], "ui");
    let r = get(&app, "/assets/app.css", None).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert_eq!(get(&app, "/assets/app.js", None).await.status, 200);
    assert_eq!(get(&app, "/assets/nope.js", None).await.status, 404);

    // No identity: 401. Not allowlisted: 403 naming the account. Allowlisted or groups.admin: in.
    let r = get(&app, "/users", None).await;
    assert_eq!(r.status, 401);
    assert!(r.text.contains("Sign-in required"));
    let r = get(&app, "/users", Some("mallory")).await;
    assert_eq!(r.status, 403);
    assert!(r.text.contains("mallory"), "{}", r.text);
    // The 403 names what the allowlist holds, the Forge login: for Forge `bob.smith` holding local `bob-smith`,
    // adding `bob-smith` would admit whoever's Forge login that is. Another provider's user is told the way in.
    for (login, provider, shown) in [
        ("bob.smith", "forge", Some("bob.smith")),
        ("bob.smith", "github", None),
    ] {
        let req = Request::get("/users")
            .header("x-hero-user", "bob-smith")
            .header("x-hero-login", login)
            .header("x-hero-provider", provider)
            .header("x-hero-claims", "users.bob-smith")
            .body(Body::empty())
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(r.status, 403);
        match shown {
            Some(login) => assert!(
                r.text
                    .contains(&format!("data-testid=\"login-to-allow\">{login}</code>")),
                "{}",
                r.text
            ),
            None => assert!(
                !r.text.contains("login-to-allow") && r.text.contains("admin</code> group"),
                "{}",
                r.text
            ),
        }
    }
    let r = get(&app, "/users", Some("erin")).await;
    assert_eq!(r.status, 200, "allowlist is case-insensitive");
    let req = Request::get("/users")
        .header("x-hero-user", "bob")
        .header("x-hero-claims", "groups.admin,users.bob")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.status, 200);

    let r = get(&app, "/", Some("alice")).await;
    assert_eq!(r.status, 303);
    let r = get(&app, "/users", Some("alice")).await;
    assert_eq!(r.status, 200);
    assert!(no_store(&r));
    assert!(r.text.contains("No users yet"));
    let csrf = csrf_of(&r.text);

    // Create user: form, then bad input re-rendered with the SDK's own messages (422).
    let r = get(&app, "/users/new", Some("alice")).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("data-username-rules"));
    assert!(r.text.contains("data-reserved=\"admin,"));
    let r = post(&app, "/users", "alice", &[("username", "carol")]).await;
    assert_eq!(r.status, 403, "no CSRF token");
    let r = post(
        &app,
        "/users",
        "alice",
        &[("csrf", "00"), ("username", "carol")],
    )
    .await;
    assert_eq!(r.status, 403, "wrong CSRF token");
    let r = post(
        &app,
        "/users",
        "mallory",
        &[("csrf", &csrf), ("username", "carol")],
    )
    .await;
    assert_eq!(r.status, 403, "not an admin");
    for (bad, rule_msg) in [
        ("Carol", "username must be lowercase".to_owned()),
        ("", "username is empty".to_owned()),
        ("admin", "username is reserved by Forge".to_owned()),
        ("a--b", "username must not contain &#39;--&#39;".to_owned()),
        (&"x".repeat(41), "username is 41 characters long".to_owned()),
    ] {
        let expected = hero_os_tfgrid_deployer_sdk::username::validate(bad).unwrap_err();
        let r = post(
            &app,
            "/users",
            "alice",
            &[("csrf", &csrf), ("username", bad)],
        )
        .await;
        assert_eq!(r.status, 422, "{bad}");
        assert!(
            r.text.contains(&rule_msg) || r.text.contains(&expected.to_string()),
            "{bad}: {}",
            r.text
        );
        assert!(r.text.contains("aria-invalid=\"true\""));
    }
    let r = post(
        &app,
        "/users",
        "alice",
        &[
            ("csrf", &csrf),
            ("username", "carol"),
            ("email", "not-an-email"),
        ],
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("email must look like"));

    // Success: the password once, no-store, token state.
    let r = post(
        &app,
        "/users",
        "alice",
        &[
            ("csrf", &csrf),
            ("username", "carol"),
            ("display_name", "Carol C"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(no_store(&r));
    assert!(r.text.contains("data-testid=\"initial-password\""));
    assert!(r.text.contains("out of band"));
    assert!(r.text.contains("data-testid=\"token-state\""));
    let user = stack.client.find_user("carol").await.unwrap();
    // The same name again: 409 with a link to the existing user.
    let r = post(
        &app,
        "/users",
        "alice",
        &[("csrf", &csrf), ("username", "carol")],
    )
    .await;
    assert_eq!(r.status, 409);
    assert!(r.text.contains(&format!("/users/{}", user.user_id)));

    // Users list and search.
    let r = get(&app, "/users?q=car", Some("alice")).await;
    assert!(r.text.contains("data-user=\"carol\""));
    assert!(r.text.contains("data-status=\"no_vm\""));
    let r = get(&app, "/users?q=zz", Some("alice")).await;
    assert!(r.text.contains("No user name starts with"));
    let r = get(&app, "/users?cursor=garbage", Some("alice")).await;
    assert!(
        r.status == 200 || r.status.is_client_error(),
        "{}",
        r.status
    );

    // Detail.
    let path = format!("/users/{}", user.user_id);
    let r = get(&app, &path, Some("alice")).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("Forge account") && r.text.contains("Demo VM"));
    assert!(r.text.contains("Reveal password"));
    assert_eq!(get(&app, "/users/999999", Some("alice")).await.status, 404);
    assert_eq!(
        get(&app, "/users/notanumber", Some("alice")).await.status,
        400
    );

    // Reveal: POST only, CSRF, no-store, audited as alice.
    assert_eq!(
        get(&app, &format!("{path}/reveal-password"), Some("alice"))
            .await
            .status,
        405
    );
    let r = post(&app, &format!("{path}/reveal-password"), "alice", &[]).await;
    assert_eq!(r.status, 403);
    let r = post(
        &app,
        &format!("{path}/reveal-password"),
        "alice",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(no_store(&r));
    assert!(r.text.contains("data-testid=\"initial-password\""));

    // Reset the Forge password: shown once; a reload of that page (the same form again) resets nothing more, so
    // the password just handed over keeps working. Before, every reload reset it again.
    let once = hero_os_tfgrid_deployer_admin::once::OnceTokens::issue();
    let form = [("csrf", csrf.as_str()), ("confirm", "yes"), ("once", &once)];
    let r = post(&app, &format!("{path}/reset-password"), "alice", &form).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("data-testid=\"new-password\""));
    let r = post(&app, &format!("{path}/reset-password"), "alice", &form).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("data-testid=\"already-done\"") && !r.text.contains("new-password"));
    let resets = stack
        .client
        .call::<methods::ListEvents>(&ListEventsParams::default())
        .await
        .unwrap()
        .events
        .into_iter()
        .filter(|e| e.action == "user.reset_forge_password")
        .count();
    assert_eq!(resets, 1, "one reset for two posts");
    let r = post(
        &app,
        &format!("{path}/reset-password"),
        "alice",
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(
        r.status, 409,
        "a form without its one-time token acts never"
    );

    // Deploy: a redirect to the user page, which then shows the job.
    let r = post(&app, &format!("{path}/deploy"), "alice", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], path.as_str());
    assert_eq!(
        post(&app, &format!("{path}/deploy"), "alice", &[])
            .await
            .status,
        403
    );
    let job = stack
        .client
        .call::<methods::ListJobs>(&ListJobsParams {
            user_id: Some(user.user_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs
        .remove(0);
    let jpath = format!("/jobs/{}", job.job_id);
    let r = get(&app, &path, Some("alice")).await;
    assert!(r.text.contains("data-testid=\"timeline\""));
    // A second deploy while one runs (or after it succeeded) is refused with the server's reason.
    let r = post(&app, &format!("{path}/deploy"), "alice", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 409, "{}", r.text);
    // The live stream: replays from the start and ends with `done` once the job is final.
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        send(
            &app,
            Request::get(format!("{jpath}/events?after=0"))
                .header("x-hero-user", "alice")
                .body(Body::empty())
                .unwrap(),
        ),
    )
    .await
    .expect("the event stream ends when the job is final");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "text/event-stream");
    assert!(resp.text.contains("event: progress"), "{}", resp.text);
    assert!(resp.text.contains("event: job"));
    assert!(resp.text.contains("event: done"));
    assert!(resp.text.contains("id: 1\n"));
    // A stream has a lifetime (then the browser reconnects through the admission check): past it, nothing more.
    use futures::StreamExt;
    let late: Vec<_> = hero_os_tfgrid_deployer_admin::sse::follow(
        stack.client.clone(),
        job.job_id,
        0,
        std::time::Duration::ZERO,
    )
    .collect()
    .await;
    assert!(late.is_empty());
    let r = get(&app, &jpath, Some("alice")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("data-final-state=\"succeeded\""),
        "{}",
        r.text
    );
    assert!(r.text.contains("run_bootstrap"));
    // The ready VM's page: its expiry, its health once probed, and a Repair button that starts
    // a repair job on the same VM.
    let r = get(&app, &path, Some("alice")).await;
    assert!(r.text.contains("data-testid=\"expires\""), "{}", r.text);
    assert!(
        r.text.contains(&format!("action=\"{path}/repair\"")),
        "{}",
        r.text
    );
    stack.client.check_health(Some(user.user_id)).await.unwrap();
    let r = get(&app, &path, Some("alice")).await;
    assert!(r.text.contains("data-health=\"healthy\""), "{}", r.text);
    assert_eq!(
        post(&app, &format!("{path}/repair"), "alice", &[])
            .await
            .status,
        403
    );
    // Without JavaScript (no confirm=yes from the dialog) the confirmation page comes first; before, the repair
    // started on the first post.
    let r = post(&app, &format!("{path}/repair"), "alice", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("data-testid=\"confirm\""), "{}", r.text);
    let none_yet = stack
        .client
        .call::<methods::ListJobs>(&ListJobsParams {
            user_id: Some(user.user_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    assert!(
        none_yet
            .iter()
            .all(|j| j.kind != hero_os_tfgrid_deployer_sdk::jobs::JobKind::Repair),
        "{none_yet:?}"
    );
    let r = post(
        &app,
        &format!("{path}/repair"),
        "alice",
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let repair = stack
        .client
        .call::<methods::ListJobs>(&ListJobsParams {
            user_id: Some(user.user_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!(
        repair.kind,
        hero_os_tfgrid_deployer_sdk::jobs::JobKind::Repair
    );
    assert_eq!(repair.actor, "alice");
    let repaired = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        stack.client.follow_job(repair.job_id, |_| {}),
    )
    .await
    .expect("the repair ends")
    .unwrap();
    assert_eq!(
        repaired.state,
        hero_os_tfgrid_deployer_sdk::jobs::JobState::Succeeded,
        "{:?}",
        repaired.error
    );

    // Cancel/retry of a finished job: a clear refusal, not a crash.
    let r = post(
        &app,
        &format!("{jpath}/cancel"),
        "alice",
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = post(&app, &format!("{jpath}/retry"), "alice", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 409, "{}", r.text);

    // Jobs pages.
    let r = get(&app, "/jobs", Some("alice")).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains(&jpath));
    assert_eq!(get(&app, "/jobs/999999", Some("alice")).await.status, 404);
    assert_eq!(
        post(
            &app,
            "/jobs/999999/cancel",
            "alice",
            &[("csrf", &csrf), ("confirm", "yes")]
        )
        .await
        .status,
        404
    );
    assert_eq!(
        post(&app, "/jobs/999999/retry", "alice", &[("csrf", &csrf)])
            .await
            .status,
        404
    );
    assert_eq!(post(&app, "/jobs/1/cancel", "alice", &[]).await.status, 403);
    assert_eq!(
        get(&app, "/jobs/999999/events", Some("alice")).await.status,
        404
    );
    // An extractor's refusal is the dashboard's error page with its reason, not a bare line of plain text.
    let wrong_type = Request::post("/users/1/deploy")
        .header("x-hero-user", "alice")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let huge = Request::post("/users/1/deploy")
        .header("x-hero-user", "alice")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(vec![b'a'; 3 << 20]))
        .unwrap();
    for (what, r) in [
        (
            "path id",
            get(&app, "/users/notanumber", Some("alice")).await,
        ),
        ("job id", get(&app, "/jobs/1x", Some("alice")).await),
        ("page", get(&app, "/users?page=x", Some("alice")).await),
        (
            "events after",
            get(&app, "/jobs/1/events?after=x", Some("alice")).await,
        ),
        ("form type", send(&app, wrong_type).await),
        ("form size", send(&app, huge).await),
    ] {
        assert!(r.status.is_client_error(), "{what}: {}", r.status);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
                && r.text.contains("data-testid=\"error-reason\"")
                && no_store(&r),
            "{what}: {}",
            r.text
        );
    }

    let r = get(&app, "/audit", Some("alice")).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("user.create"));
    let r = get(&app, "/audit?actor=alice&action=user.reveal", Some("alice")).await;
    assert!(r.text.contains("user.reveal_password"));
    assert!(!r.text.contains("user.create"));
    let r = get(&app, "/audit?user=nobody", Some("alice")).await;
    assert!(r.text.contains("No events match"));

    // The server's audit log names the acting admin.
    let events = stack
        .client
        .list_events(&ListEventsParams {
            actor: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = events.events.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"user.create"), "{actions:?}");
    assert!(actions.contains(&"user.reveal_password"), "{actions:?}");

    // Decommission and delete need confirmation: without `confirm=yes` a confirmation page.
    let r = post(
        &app,
        &format!("{path}/decommission"),
        "alice",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("data-testid=\"confirm\""));
    assert!(r.text.contains("name=\"confirm\" value=\"yes\""));
    let r = post(&app, "/jobs/5/cancel", "alice", &[("csrf", &csrf)]).await;
    assert!(r.text.contains("data-testid=\"confirm\""));
    let r = post(&app, &format!("{path}/delete"), "alice", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("Forget user?"));

    let r = post(
        &app,
        &format!("{path}/decommission"),
        "alice",
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);

    // Unknown page.
    assert_eq!(get(&app, "/nope", Some("alice")).await.status, 404);
    support::decommission_all(&stack.client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_user_with_confirmation() {
    let stack = Stack::start().await;
    stack.set_allowlist("alice").await;
    let app = router(stack.state(AuthMode::Headers));
    let csrf = csrf_of(&get(&app, "/users", Some("alice")).await.text);
    let created = stack.client.create_user("dave", None, None).await.unwrap();
    let path = format!("/users/{}", created.user_id);
    let r = post(
        &app,
        &format!("{path}/delete"),
        "alice",
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(get(&app, &path, Some("alice")).await.status, 404);
}

/// The `href` of the pager link with `rel`, as the browser would follow it.
fn pager_link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!("rel=\"{rel}\" href=\""))?;
    let rest = &html[at + rel.len() + 13..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_pages_forward_and_back() {
    let stack = Stack::start().await;
    stack.set_allowlist("alice").await;
    let app = router(stack.state(AuthMode::Headers));
    let creates = (0..=50).map(|i| {
        let client = stack.client.clone();
        async move { client.create_user(&format!("pg{i:02}"), None, None).await }
    });
    for created in futures::future::join_all(creates).await {
        created.unwrap();
    }
    let first = get(&app, "/users?q=pg", Some("alice")).await;
    assert_eq!(first.status, 200);
    assert!(first.text.contains("data-user=\"pg00\""));
    assert!(first.text.contains("data-user=\"pg49\""));
    assert!(
        pager_link(&first.text, "prev").is_none(),
        "no Previous on the first page"
    );
    let next = pager_link(&first.text, "next").expect("a Next link on a full page");
    let second = get(&app, &next, Some("alice")).await;
    assert_eq!(second.status, 200);
    assert!(second.text.contains("data-user=\"pg50\""));
    assert!(!second.text.contains("data-user=\"pg49\""));
    assert!(
        second.text.contains("Showing 51–51 of 51"),
        "{}",
        second.text
    );
    assert!(pager_link(&second.text, "next").is_none());
    let prev = pager_link(&second.text, "prev").expect("a Previous link on page 2");
    let back = get(&app, &prev, Some("alice")).await;
    assert_eq!(back.status, 200);
    assert!(back.text.contains("data-user=\"pg00\""));
    assert!(back.text.contains("Showing 1–50 of 51"), "{}", back.text);
    assert!(pager_link(&back.text, "prev").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_edits_take_effect_on_the_next_request() {
    let stack = Stack::start().await;
    let app = router(stack.state(AuthMode::Headers));
    assert_eq!(get(&app, "/users", Some("frank")).await.status, 403);
    stack.set_allowlist("alice,frank").await;
    assert_eq!(get(&app, "/users", Some("frank")).await.status, 200);
    stack.set_allowlist("alice").await;
    assert_eq!(get(&app, "/users", Some("frank")).await.status, 403);
}

fn assertion(signer: &AssertionSigner, user: &str, claims: &[&str], exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    signer.sign(&AssertionPayload {
        iss: hero_identity::ASSERTION_ISSUER.into(),
        aud: "admin".into(),
        sub: user.into(),
        ctx: None,
        claims: claims.iter().map(|c| Claim::parse(c).unwrap()).collect(),
        prv: "forge".into(),
        lgn: user.into(),
        xid: "42".into(),
        iat: now,
        exp: (now as i64 + exp_in) as u64,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_assertions_from_the_proxy() {
    let stack = Stack::start().await;
    stack.set_allowlist("alice").await;
    let signer = AssertionSigner::from_seed(&[7u8; 32]);
    let app = router(stack.state(AuthMode::Signed(signer.verifier("admin").unwrap())));
    let with = |token: String, user: Option<&str>| {
        let mut r = Request::get("/users").header("x-hero-assertion", token);
        if let Some(u) = user {
            r = r.header("x-hero-user", u);
        }
        r.body(Body::empty()).unwrap()
    };
    // Plain headers alone are not enough in signed mode.
    assert_eq!(get(&app, "/users", Some("alice")).await.status, 401);
    let ok = assertion(&signer, "alice", &["users.alice"], 300);
    assert_eq!(
        send(&app, with(ok.clone(), Some("alice"))).await.status,
        200
    );
    assert_eq!(
        send(&app, with(ok, Some("mallory"))).await.status,
        401,
        "header disagrees"
    );
    // Past its expiry by more than the clock leeway.
    let expired = assertion(
        &signer,
        "alice",
        &[],
        -(hero_identity::CLOCK_LEEWAY_SECS as i64) - 10,
    );
    assert_eq!(send(&app, with(expired, None)).await.status, 401);
    let other = AssertionSigner::from_seed(&[8u8; 32]);
    assert_eq!(
        send(&app, with(assertion(&other, "alice", &[], 300), None))
            .await
            .status,
        401
    );
    let admin = assertion(&signer, "grace", &["groups.admin", "users.grace"], 300);
    assert_eq!(send(&app, with(admin, None)).await.status, 200);
    let r = send(
        &app,
        with(assertion(&signer, "heidi", &["users.heidi"], 300), None),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.text.contains("heidi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_is_loopback_only_with_a_banner() {
    let stack = Stack::start().await;
    stack.set_allowlist("dev-admin").await;
    let app = router(stack.state(AuthMode::Dev {
        user: "dev-admin".into(),
    }));
    let from = |ip: &str, host: Option<&str>| {
        let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
        let mut req = Request::get("/users");
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    };
    let r = send(&app, from("127.0.0.1", Some("127.0.0.1:8080"))).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("Development mode"));
    assert!(r.text.contains("dev-admin"));
    // Error pages too carry the banner (before, they were built without it).
    for path in ["/users/notanumber", "/users/999999", "/no-such-page"] {
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut req = Request::get(path)
            .header("host", "127.0.0.1:8080")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        let r = send(&app, req).await;
        assert!(r.status.is_client_error(), "{path}: {}", r.status);
        assert!(r.text.contains("Development mode"), "{path}: {}", r.text);
    }
    assert_eq!(
        send(&app, from("192.0.2.7", Some("127.0.0.1:8080")))
            .await
            .status,
        401
    );
    // A loopback peer is not enough: a DNS-rebound page connects from loopback but asks for its own name.
    for host in [
        "localhost:1",
        "LOCALHOST",
        "127.0.0.9:80",
        "[::1]:8080",
        "[::1]",
    ] {
        assert_eq!(
            send(&app, from("127.0.0.1", Some(host))).await.status,
            200,
            "{host}"
        );
    }
    for host in [
        None,
        Some("rebind.attacker.example:8080"),
        Some("attacker.example"),
        Some("127.0.0.1.attacker.example"),
        Some("localhost.attacker.example:80"),
        Some("[::1]x:80"),
        Some("0.0.0.0:8080"),
        Some(""),
    ] {
        assert_eq!(
            send(&app, from("127.0.0.1", host)).await.status,
            401,
            "{host:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_the_socket_and_tcp() {
    let stack = Stack::start().await;
    stack.set_allowlist("dev-admin").await;
    let (_admin, url) = stack.start_admin(&["--auth-mode", "dev"]);
    let (status, _, body) = support::http(&url, "GET", "/health", &[], None).await;
    assert_eq!(status, 200);
    assert!(body.contains("hero_os_tfgrid_deployer_admin"));
    let (status, _, body) = support::http(&url, "GET", "/users", &[], None).await;
    assert_eq!(status, 200, "{body}");
    let sock = stack
        .socket_dir()
        .join("hero_os_tfgrid_deployer/admin.sock");
    let unix = format!("unix:{}", sock.display());
    let (status, _, _) =
        support::http(&unix, "GET", "/.well-known/heroservice.json", &[], None).await;
    assert_eq!(status, 200);
    let (status, _, _) = support::http(&unix, "GET", "/users", &[], None).await;
    assert_eq!(
        status, 200,
        "the local socket counts as loopback in dev mode"
    );

    // Dev mode refuses a non-loopback address; signed mode refuses to start without a key; headers mode refuses
    // TCP.
    for args in [
        vec!["--auth-mode", "dev", "--listen", "0.0.0.0:0", "--no-socket"],
        vec!["--auth-mode", "signed", "--no-socket"],
        // Headers mode trusts plain headers: never on TCP, loopback included.
        vec!["--auth-mode", "headers", "--listen", "127.0.0.1:0"],
    ] {
        let out = std::process::Command::new(support::binary("hero_os_tfgrid_deployer_admin"))
            .args(["--secrets-dir"])
            .arg(stack.root.join("data/secrets"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}

#[tokio::test]
async fn test_users_are_flagged_and_incomplete_users_claim_nothing() {
    let mut stack = Stack::start().await;
    stack.set_allowlist("alice").await;
    let app = router(stack.state(AuthMode::Headers));
    let r = get(&app, "/users", Some("alice")).await;
    let csrf = csrf_of(&r.text);
    let r = post(
        &app,
        "/users",
        "alice",
        &[("csrf", &csrf), ("username", "deployer_test_t1")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("data-testid=\"test-user-warning\""),
        "{}",
        r.text
    );
    let r = post(
        &app,
        "/users",
        "alice",
        &[("csrf", &csrf), ("username", "tess")],
    )
    .await;
    assert!(!r.text.contains("test-user-warning"), "{}", r.text);

    // Forge goes away mid-way: the record stays incomplete, and its page says so without an
    // adoption or a Forge id it never had.
    let _ = stack.forge.child.kill();
    let _ = stack.forge.child.wait();
    assert!(stack.client.create_user("eve", None, None).await.is_err());
    let eve = stack.client.find_user("eve").await.unwrap();
    assert!(!eve.setup_complete);
    let r = get(&app, &format!("/users/{}", eve.user_id), Some("alice")).await;
    assert_eq!(r.status, 200);
    let account = r
        .text
        .split("data-testid=\"forge-account\"")
        .nth(1)
        .and_then(|t| t.split("</dd>").next())
        .unwrap()
        .to_owned();
    assert!(account.contains("setup incomplete"), "{account}");
    assert!(
        !account.contains("Forge id") && !account.contains("adopted"),
        "{account}"
    );
}

/// The server's audit log names the admin as Forge knows them, never by the proxy's lossy local name: Forge's
/// `alice` holding local `alice-2` (another provider's `alice` signed in first) is `alice`, and that other
/// provider's `alice` (an admin through `groups.admin`) is `alice@github`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_the_admin_by_forge_login_not_by_local_name() {
    let stack = Stack::start().await;
    stack.set_allowlist("alice").await;
    let app = router(stack.state(AuthMode::Headers));
    let forge_alice = [
        ("x-hero-user", "alice-2"),
        ("x-hero-login", "alice"),
        ("x-hero-provider", "forge"),
        ("x-hero-claims", "users.alice-2"),
    ];
    let github_alice = [
        ("x-hero-user", "alice"),
        ("x-hero-login", "alice"),
        ("x-hero-provider", "github"),
        ("x-hero-claims", "groups.admin,users.alice"),
    ];
    let as_ = |who: &[(&str, &str)], mut req: axum::http::request::Builder| {
        for (k, v) in who {
            req = req.header(*k, *v);
        }
        req
    };
    for (who, created, actor) in [
        (&forge_alice[..], "dora", "alice"),
        (&github_alice[..], "erik", "alice@github"),
    ] {
        let page = send(
            &app,
            as_(who, Request::get("/users"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(page.status, 200, "{actor}: {}", page.text);
        assert!(page.text.contains(actor), "the dashboard shows {actor}");
        let form = serde_urlencoded::to_string([
            ("csrf", csrf_of(&page.text).as_str()),
            ("username", created),
        ])
        .unwrap();
        let req = as_(who, Request::post("/users"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(r.status, 200, "{actor}: {}", r.text);
        let events = stack
            .client
            .list_events(&ListEventsParams {
                actor: Some(actor.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .events;
        assert!(
            events
                .iter()
                .any(|e| e.action == "user.create" && e.subject.contains(created)),
            "{actor}: {events:?}"
        );
    }
    for lossy in ["alice-2", "alice"] {
        let events = stack
            .client
            .list_events(&ListEventsParams {
                actor: Some(lossy.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .events;
        let creates: Vec<_> = events
            .iter()
            .filter(|e| e.action == "user.create")
            .collect();
        // `alice` is Forge's alice: dora only; `alice-2` is nobody's name in the log.
        let expect = usize::from(lossy == "alice");
        assert_eq!(creates.len(), expect, "{lossy}: {creates:?}");
    }
}
