//! Browser tests in headless Chromium (Debian `chromium` + `chromium-driver`, via fantoccini)
//! against the real binaries: dev Forge, deployer server (local backend, real sshd), this
//! dashboard in `--auth-mode signed`, behind a header-signing TEST HARNESS edge (support/edge.rs).
//!
//! The walk: create user → read password → deploy → progress reaches Ready → follow the URL →
//! decommission; a failed job shows its reason and Retry completes it; a non-allowlisted identity
//! gets 403 and an allowlist edit takes effect while running. Screenshots of every page go to
//! `artifacts/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use hero_identity::AssertionSigner;
use support::edge::{start_edge, EdgeIdentity};
use support::{poll, Chromedriver, Stack};

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn exists(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

/// Waits until the user page shows a final job state (the page reloads itself at the end).
async fn wait_final(c: &Client, timeout: Duration) -> String {
    poll("the job to finish", timeout, || async {
        let els = c.find_all(Locator::Css("[data-final-state]")).await.ok()?;
        let el = els.first()?;
        let s = el.attr("data-final-state").await.ok()??;
        matches!(s.as_str(), "succeeded" | "failed" | "cancelled").then_some(s)
    })
    .await
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Clicks something that submits a form and waits until the next document has loaded (so later
/// checks do not read the old page).
async fn click_and_load(c: &Client, css: &str, confirm: bool) {
    c.execute("window.__old_page = true;", vec![])
        .await
        .unwrap();
    click(c, css).await;
    if confirm {
        accept_confirm(c).await;
    }
    poll("the next page", Duration::from_secs(30), || async {
        let v = c
            .execute(
                "return window.__old_page === true && document.readyState;",
                vec![],
            )
            .await
            .ok()?;
        (v == serde_json::Value::Bool(false)).then_some(())
    })
    .await;
}

async fn accept_confirm(c: &Client) {
    poll("the confirm dialog", Duration::from_secs(5), || async {
        c.accept_alert().await.ok()
    })
    .await;
}

fn bootstrap_script(root: &Path, flag: &Path, slow: &Path) -> PathBuf {
    let stand_in = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../hero_os_tfgrid_deployer_backends/assets/local-setup-binaries.sh"),
    )
    .unwrap();
    // The local stand-in, preceded by a switch the test flips to make a bootstrap fail for real.
    let body = stand_in.replacen(
        "set -euo pipefail\n",
        &format!(
            "set -euo pipefail\nif [ -e {} ]; then echo 'bootstrap: demo failure requested by the test' >&2; exit 1; fi\n\
             while [ -e {} ]; do sleep 0.1; done\n",
            flag.display(),
            slow.display()
        ),
        1,
    );
    let path = root.join("bootstrap.sh");
    std::fs::write(&path, body).unwrap();
    path
}

/// The newest job of a user.
async fn latest_job(stack: &Stack, user_id: i64) -> i64 {
    stack
        .client
        .list_jobs(&hero_os_tfgrid_deployer_sdk::jobs::ListJobsParams {
            user_id: Some(user_id),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs[0]
        .job_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_walk_in_headless_chromium() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let flag = cfg_dir.path().join("fail-bootstrap");
    let slow = cfg_dir.path().join("hold-bootstrap");
    let script = bootstrap_script(cfg_dir.path(), &flag, &slow);
    let config = cfg_dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[provision]\nbackend = \"local\"\nmax_attempts = 1\nbackoff_base_ms = 100\npoll_ms = 100\nbootstrap_script = \"{}\"\n",
            script.display()
        ),
    )
    .unwrap();
    let stack = Stack::start_with(&[
        ("HERO_DEPLOYER_CONFIG", config.to_str().unwrap()),
        ("HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    stack.set_allowlist("alice").await;
    let signer = Arc::new(AssertionSigner::from_seed(&[42u8; 32]));
    let jwks = cfg_dir.path().join("proxy-key.json");
    std::fs::write(&jwks, signer.public_jwks().to_string()).unwrap();
    let (_admin, admin_url) = stack.start_admin(&[
        "--auth-mode",
        "signed",
        "--proxy-key",
        jwks.to_str().unwrap(),
        "--no-socket",
    ]);
    let alice = start_edge(
        &admin_url,
        signer.clone(),
        EdgeIdentity {
            user: "alice".into(),
            claims: vec!["users.alice".into()],
        },
    )
    .await;
    let mallory = start_edge(
        &admin_url,
        signer.clone(),
        EdgeIdentity {
            user: "mallory".into(),
            claims: vec!["users.mallory".into()],
        },
    )
    .await;

    let driver = Chromedriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let c = support::browser(&driver, profile.path()).await;
    let result = walk(&c, &stack, &alice, &mallory, &flag, &slow).await;
    let _ = std::fs::remove_file(&slow);
    let _ = c.close().await;
    drop(driver);
    support::decommission_all(&stack.client).await;
    if let Err(e) = result {
        panic!("{e}\n--- server log ---\n{}", stack.server_log());
    }
}

async fn walk(
    c: &Client,
    stack: &Stack,
    alice: &str,
    mallory: &str,
    flag: &Path,
    slow: &Path,
) -> Result<(), String> {
    // Users page, empty.
    c.goto(&format!("{alice}/users")).await.unwrap();
    assert!(text(c, "h1").await.contains("Users"));
    shot(c, "01-users-empty").await;

    // Create user: inline validation (JS mirrors the SDK rules) then success.
    c.goto(&format!("{alice}/users/new")).await.unwrap();
    let input = c.find(Locator::Id("username")).await.unwrap();
    input.send_keys("Ada_Lovelace").await.unwrap();
    let err = text(c, "#username-error").await;
    assert_eq!(err, "username must be lowercase", "inline validation");
    shot(c, "02-create-invalid").await;
    input.clear().await.unwrap();
    input.send_keys("ada").await.unwrap();
    assert_eq!(text(c, "#username-error").await, "");
    c.find(Locator::Id("display_name"))
        .await
        .unwrap()
        .send_keys("Ada Lovelace")
        .await
        .unwrap();
    // The result is the next page: read it, not the form (a find right after the click could
    // still see the old document).
    click_and_load(c, "form.stack button[type=submit]", false).await;
    let pw = text(c, "[data-testid=initial-password]").await;
    assert_eq!(pw.len(), 32, "initial password shown once: {pw:?}");
    assert!(text(c, "[data-testid=token-state]").await.contains("set"));
    assert!(
        exists(c, "button[data-copy-target]:not([hidden])").await,
        "copy button enabled by JS"
    );
    shot(c, "03-create-result").await;

    // Deploy, watch it live, reach Ready.
    click(c, "form[action$='/deploy'] button").await;
    poll("the live timeline", Duration::from_secs(20), || async {
        exists(c, "[data-live-job]").await.then_some(()).or(exists(
            c,
            "[data-final-state=succeeded]",
        )
        .await
        .then_some(()))
    })
    .await;
    // A screenshot while steps are still running, when we catch one.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if exists(c, ".steps li[data-state=running]").await {
            shot(c, "04-deploy-live").await;
            break;
        }
        if exists(c, "[data-final-state=succeeded]").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = wait_final(c, Duration::from_secs(180)).await;
    if state != "succeeded" {
        return Err(format!(
            "deploy ended {state}: {}",
            c.source().await.unwrap_or_default()
        ));
    }
    assert!(exists(c, "[data-status=ready]").await);
    let url = c
        .find(Locator::Css("[data-testid=gateway-url]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    shot(c, "05-user-ready").await;

    // The invitation: URL and a ready-to-paste message, each with a copy button; never the password.
    let invite_url = text(c, "[data-testid=invite-url]").await;
    assert_eq!(invite_url, url, "the invitation names the gateway URL");
    let message = text(c, "[data-testid=invite-message]").await;
    assert!(
        message.contains(&url) && message.contains("Sign in with your Forge account: username ada"),
        "{message}"
    );
    assert!(message.contains("Hi Ada Lovelace"), "{message}");
    assert!(
        !message.contains(&pw),
        "the password is never in the invitation"
    );
    assert!(text(c, "[data-testid=invitation]")
        .await
        .contains("deliberately not in this message"));
    for (button, target) in [("copy-url", &invite_url), ("copy-message", &message)] {
        click(c, &format!("[data-testid={button}]:not([hidden])")).await;
        // Copied to the clipboard (the button says so) or, where the browser refuses the
        // clipboard, selected for a manual copy: either way exactly the target's text.
        let got: String = poll("the copy", Duration::from_secs(5), || async {
            let v = c
                .execute(
                    "var b = document.querySelector(arguments[0]); \
                     if (b.textContent === 'Copied') return 'copied'; \
                     var s = window.getSelection().toString().trim(); return s || null;",
                    vec![serde_json::json!(format!("[data-testid={button}]"))],
                )
                .await
                .ok()?;
            v.as_str().map(str::to_owned)
        })
        .await;
        assert!(got == "copied" || got == target.trim(), "{button}: {got:?}");
    }
    shot(c, "05b-invitation").await;
    let user_page = c.current_url().await.unwrap().to_string();
    // A local sandbox is labelled as one, without a grid VM's spec.
    assert!(text(c, "[data-testid=vm-kind]")
        .await
        .contains("local sandbox"));
    assert!(!exists(c, "[data-testid=vm-spec]").await);

    // Follow the URL: the sandbox's SSO edge sends an anonymous browser to Forge's sign-in page.
    c.goto(&url).await.unwrap();
    let landed = c.current_url().await.unwrap().to_string();
    assert!(
        landed.contains("/login/oauth/authorize"),
        "{url} -> {landed}"
    );
    assert!(exists(c, "#sign_in").await, "{landed}");
    shot(c, "06-demo-url").await;

    // Users list shows the badge and URL.
    c.goto(&format!("{alice}/users")).await.unwrap();
    assert!(exists(c, "tr[data-user=ada] [data-status=ready]").await);
    shot(c, "07-users-ready").await;
    // The row's time left (the default 30 days), and the batch form: tick ada, extend by 5
    // days — real checkbox and submit-button fields, posted by the browser.
    assert!(text(c, "tr[data-user=ada]").await.contains("d left"));
    click(c, "tr[data-user=ada] input[name=user]").await;
    let days = c
        .find(Locator::Css("[data-testid=batch-days]"))
        .await
        .unwrap();
    days.clear().await.unwrap();
    days.send_keys("5").await.unwrap();
    click_and_load(c, "[data-testid=batch-extend]", false).await;
    assert!(
        exists(c, "tr[data-user=ada] [data-outcome=extended]").await,
        "{}",
        c.source().await.unwrap_or_default()
    );
    shot(c, "07b-batch-extended").await;
    // 35 days left now (30 + 5): the "expiring within 7 days" filter leaves ada out.
    c.goto(&format!("{alice}/users")).await.unwrap();
    let left = text(c, "tr[data-user=ada] [data-expires]").await;
    assert_eq!(left, "35 d left");
    click(c, "[data-testid=expiring-filter]").await;
    click_and_load(c, "form.search button[type=submit]", false).await;
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("expiring=7"));
    assert!(!exists(c, "tr[data-user=ada]").await);
    assert!(text(c, ".empty")
        .await
        .contains("No VM expires within 7 days."));
    // Redeploy from the user's page (JS confirm): a redeploy job on the same VM.
    c.goto(&user_page).await.unwrap();
    assert_eq!(text(c, "[data-testid=current-profile]").await, "demo");
    click_and_load(c, "[data-testid=redeploy]", true).await;
    let state = poll("the redeploy job", Duration::from_secs(120), || async {
        let s = wait_final(c, Duration::from_secs(120)).await;
        text(c, "[data-testid=timeline] h2")
            .await
            .contains("redeploy")
            .then_some(s)
    })
    .await;
    assert_eq!(state, "succeeded");
    assert!(exists(c, "[data-status=ready]").await);

    // Decommission (JS confirm dialog).
    c.goto(&user_page).await.unwrap();
    click_and_load(c, "form[action$='/decommission'] button", true).await;
    let state = poll("the decommission job", Duration::from_secs(120), || async {
        let s = wait_final(c, Duration::from_secs(120)).await;
        let on_decommission = text(c, "[data-testid=timeline] h2")
            .await
            .contains("decommission");
        on_decommission.then_some(s)
    })
    .await;
    assert_eq!(state, "succeeded");
    assert!(exists(c, "[data-status=decommissioned]").await);
    shot(c, "08-decommissioned").await;

    // Reset the Forge password (confirmed, audited): the new one is shown once and is the one
    // the deployer now holds.
    click_and_load(c, "form[action$='/reset-password'] button", true).await;
    let new_password = text(c, "[data-testid=new-password]").await;
    assert_eq!(new_password.len(), 32, "{new_password:?}");
    let ada = stack.client.find_user("ada").await.unwrap();
    let held = stack
        .client
        .reveal_initial_password(ada.user_id)
        .await
        .unwrap();
    assert_eq!(held.initial_password, new_password);
    shot(c, "08b-password-reset").await;
    c.goto(&user_page).await.unwrap();

    // A failed job shows its reason; Retry completes it.
    std::fs::write(flag, "1").unwrap();
    let bea = stack.client.create_user("bea", None, None).await.unwrap();
    c.goto(&format!("{alice}/users/{}", bea.user_id))
        .await
        .unwrap();
    click(c, "form[action$='/deploy'] button").await;
    let state = wait_final(c, Duration::from_secs(180)).await;
    assert_eq!(state, "failed");
    let reason = text(c, "[data-testid=job-error]").await;
    assert!(
        reason.contains("run_bootstrap") || reason.contains("bootstrap"),
        "{reason}"
    );
    shot(c, "09-job-failed").await;
    std::fs::remove_file(flag).unwrap();
    // The job page has the same Retry (and no Cancel for a failed job).
    let bea_job = latest_job(stack, bea.user_id).await;
    c.goto(&format!("{alice}/jobs/{bea_job}")).await.unwrap();
    assert!(!exists(c, "[data-testid=job-actions] form[action$='/cancel']").await);
    click_and_load(
        c,
        "[data-testid=job-actions] form[action$='/retry'] button",
        false,
    )
    .await;
    let state = wait_final(c, Duration::from_secs(180)).await;
    assert_eq!(state, "succeeded", "retry completes");
    shot(c, "10-retry-succeeded").await;

    // Cancel a running job: the bootstrap is held until the test lets it go.
    std::fs::write(slow, "1").unwrap();
    let cy = stack.client.create_user("cy", None, None).await.unwrap();
    c.goto(&format!("{alice}/users/{}", cy.user_id))
        .await
        .unwrap();
    click_and_load(c, "form[action$='/deploy'] button", false).await;
    poll(
        "run_bootstrap to be running (live)",
        Duration::from_secs(120),
        || async {
            exists(
                c,
                ".steps li[data-name='run_bootstrap'][data-state=running]",
            )
            .await
            .then_some(())
        },
    )
    .await;
    shot(c, "10b-job-running").await;
    // The log counter follows the lines that arrived live, and the running step shows its
    // elapsed time, ticking.
    let counted = poll("the event counter", Duration::from_secs(10), || async {
        let v = c
            .execute(
                "return [document.querySelector('[data-log-count]').textContent, \
                 document.querySelectorAll('#job-log li[data-seq]').length];",
                vec![],
            )
            .await
            .ok()?;
        let shown: usize = v[0].as_str()?.parse().ok()?;
        (shown == v[1].as_u64()? as usize).then_some(shown)
    })
    .await;
    assert!(counted > 5, "{counted} events");
    // By name, not position: a step inserted before it must not move what is watched.
    let running = ".steps li[data-name='run_bootstrap'] .dur";
    let first = poll("the elapsed time", Duration::from_secs(10), || async {
        let t = text(c, running).await;
        (!t.is_empty()).then_some(t)
    })
    .await;
    poll(
        "the elapsed time to tick",
        Duration::from_secs(10),
        || async { (text(c, running).await != first).then_some(()) },
    )
    .await;
    // Cancel from the job page.
    let cy_job = latest_job(stack, cy.user_id).await;
    c.goto(&format!("{alice}/jobs/{cy_job}")).await.unwrap();
    assert!(!exists(c, "[data-testid=job-actions] form[action$='/retry']").await);
    click_and_load(
        c,
        "[data-testid=job-actions] form[action$='/cancel'] button",
        true,
    )
    .await;
    std::fs::remove_file(slow).unwrap();
    let state = wait_final(c, Duration::from_secs(120)).await;
    assert_eq!(state, "cancelled");
    assert!(text(c, "[data-testid=job-error]")
        .await
        .contains("Cancelled"));
    shot(c, "10c-job-cancelled").await;

    // A forgotten user's jobs stay listed, without a link to the user page (it would be 404).
    stack.client.delete_user(cy.user_id).await.unwrap();
    c.goto(&format!("{alice}/jobs")).await.unwrap();
    assert!(exists(c, "[data-testid=recent-jobs]").await);
    assert!(text(c, "[data-testid=forgotten-user]").await.contains("cy"));
    assert!(!exists(c, &format!("a[href='/users/{}']", cy.user_id)).await);
    shot(c, "11-jobs").await;
    c.goto(&format!("{alice}/jobs/{cy_job}")).await.unwrap();
    assert!(exists(c, "[data-testid=forgotten-user]").await);
    assert!(!exists(c, &format!("a[href='/users/{}']", cy.user_id)).await);

    // Audit at 1400 px: the Detail column is on screen inside its card, times have seconds,
    // and one-line rows are all the same height.
    c.set_window_size(1400, 900).await.unwrap();
    c.goto(&format!("{alice}/audit?actor=alice")).await.unwrap();
    let audit = text(c, "[data-testid=audit-table]").await;
    assert!(
        audit.contains("user.create") && audit.contains("user.reset_forge_password"),
        "{audit}"
    );
    let fit = c
        .execute(
            "var t = document.querySelector('[data-testid=audit-table]');\
             var th = t.querySelectorAll('thead th'); var d = th[th.length - 1].getBoundingClientRect();\
             var w = t.closest('.table-wrap').getBoundingClientRect();\
             var rows = Array.from(t.querySelectorAll('tbody tr')).filter(function (r) {\
               return r.lastElementChild.textContent.length < 30 && r.children[3].textContent.length < 20 && r.children[4].textContent.length < 8; })\
               .map(function (r) { return Math.round(r.getBoundingClientRect().height); });
             var spill = Array.from(t.querySelectorAll('td')).filter(function (td) {\
               return td.scrollWidth > td.clientWidth + 1; }).map(function (td) { return td.textContent; });\
             return [d.right <= w.right + 1 && d.right <= window.innerWidth, d.width, rows, spill];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fit[0], true, "Detail column off-screen: {fit}");
    assert!(
        fit[1].as_f64().unwrap() > 150.0,
        "Detail column too narrow: {fit}"
    );
    assert_eq!(
        fit[3],
        serde_json::json!([]),
        "cells spilling into their neighbours"
    );
    let heights: Vec<u64> = fit[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_u64().unwrap())
        .collect();
    assert!(
        heights.len() > 3 && heights.windows(2).all(|w| w[0] == w[1]),
        "uneven rows: {heights:?}"
    );
    let when = text(c, "[data-testid=audit-table] tbody td.num").await;
    assert!(
        when.len() == "2026-11-22 18:32:05 UTC".len() && when.ends_with(" UTC"),
        "{when}"
    );
    shot(c, "12-audit").await;
    c.set_window_size(1280, 900).await.unwrap();

    // Live-progress delay measured in the browser (event time → arrival), for the benchmark.
    let lat = c
        .execute("return window.__heroLatencies || [];", vec![])
        .await
        .unwrap();
    std::fs::write(shots_dir().join("../live-latency.json"), lat.to_string()).unwrap();

    // Phone width.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{alice}/users")).await.unwrap();
    shot(c, "13-users-phone").await;
    c.goto(&user_page).await.unwrap();
    shot(c, "14-user-phone").await;
    c.set_window_size(1280, 900).await.unwrap();

    // Not allowlisted: 403 naming the account; an allowlist edit takes effect at once.
    c.goto(&format!("{mallory}/users")).await.unwrap();
    assert_eq!(text(c, "[data-testid=signed-in-as]").await, "mallory");
    shot(c, "15-forbidden").await;
    stack.set_allowlist("alice,mallory").await;
    c.refresh().await.unwrap();
    assert!(text(c, "h1").await.contains("Users"));
    stack.set_allowlist("alice").await;
    c.refresh().await.unwrap();
    assert!(exists(c, "[data-testid=signed-in-as]").await);
    Ok(())
}
