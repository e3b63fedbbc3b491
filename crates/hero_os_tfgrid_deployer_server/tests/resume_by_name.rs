//! A job saved by an earlier deployer resumes by step *name* after an upgrade changed the step
//! list. `fixtures/resume_v1.db` was written by the deployer as of the commit that added it (a
//! provision job of user `fixture` failed at step 6/10 `wait_ssh`, steps 1–5 done), by running
//! the real server; here a step is inserted after `deploy_gateway` (where `register_sso` goes)
//! and the saved rows are matched and renumbered as the runner does before it resumes a job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hero_os_tfgrid_deployer_sdk::jobs::{JobState, StepState};
use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::error::ServiceError;
use hero_os_tfgrid_deployer_server::provision::steps::PROVISION_STEPS;
use hero_os_tfgrid_deployer_server::provision::{resume, store};

fn fixture_copy() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resume_v1.db"),
        &path,
    )
    .unwrap();
    let db = Db::open(&path).unwrap();
    (dir, db)
}

async fn job_steps(db: &Db) -> Vec<(u32, String, StepState, u32)> {
    db.call(|conn| -> Result<_, ServiceError> {
        let job = store::require_job(conn, 1)?;
        Ok(job
            .steps
            .into_iter()
            .map(|s| (s.index, s.name, s.state, s.attempts))
            .collect())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_saved_job_is_matched_by_name_after_a_step_is_inserted() {
    let (_dir, db) = fixture_copy();
    let job = db
        .call(|conn| -> Result<_, ServiceError> { store::require_job(conn, 1) })
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.current_step.as_deref(), Some("wait_ssh"));

    // The fixture's own list (the table before register_sso and configure_sso): nothing to change.
    let inserted_since = ["register_sso", "configure_sso"];
    let before: Vec<&str> = PROVISION_STEPS
        .iter()
        .copied()
        .filter(|s| !inserted_since.contains(s))
        .collect();
    let plan = resume::plan(&before, &job.steps).unwrap();
    assert!(!plan.changes_rows(), "{plan:?}");

    // The upgrade that inserted register_sso after deploy_gateway: today's table.
    let table = PROVISION_STEPS.to_vec();
    let at = table.iter().position(|s| *s == "register_sso").unwrap();
    assert_eq!(table[at - 1], "deploy_gateway");
    let plan = resume::plan(&table, &job.steps).unwrap();
    // Paired by position, saved row 6 (wait_ssh, failed) would have been run as the new
    // step, and the last step would have had no row at all.
    assert_eq!(job.steps[at].name, "wait_ssh");
    let sso = table.iter().position(|s| *s == "configure_sso").unwrap();
    assert_eq!(
        plan.added,
        [
            (at as u32 + 1, "register_sso"),
            (sso as u32 + 1, "configure_sso")
        ]
    );
    db.write(move |conn| store::apply_resume_plan(conn, 1, &plan))
        .await
        .unwrap();

    let rows = job_steps(&db).await;
    let names: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(names, table, "rows follow the new table");
    let by_name = |name: &str| rows.iter().find(|r| r.1 == name).unwrap().clone();
    for done in [
        "forge_user",
        "ssh_key",
        "select_node",
        "deploy_vm",
        "deploy_gateway",
    ] {
        assert_eq!(by_name(done).2, StepState::Done, "{done} stays done");
    }
    assert_eq!(
        by_name("register_sso"),
        (6, "register_sso".into(), StepState::Pending, 0)
    );
    // The failed step keeps its state and attempts under its new index.
    assert_eq!(
        by_name("wait_ssh"),
        (7, "wait_ssh".into(), StepState::Failed, 1)
    );
    assert_eq!(by_name("finalize").0, table.len() as u32);
    // Where the resumed job starts: the new step, then the failed one.
    let first = rows
        .iter()
        .find(|r| r.2 != StepState::Done)
        .map(|r| r.1.as_str());
    assert_eq!(first, Some("register_sso"));
    // The job's event log is untouched (events are append-only).
    let events = db
        .call(|conn| -> Result<_, ServiceError> { Ok(store::events_after(conn, 1, 0, 1000)?) })
        .await
        .unwrap();
    assert!(events
        .iter()
        .any(|e| e.message.starts_with("step 6/10 wait_ssh")));

    // Matching again is a no-op.
    let job = db
        .call(|conn| -> Result<_, ServiceError> { store::require_job(conn, 1) })
        .await
        .unwrap();
    assert!(!resume::plan(&table, &job.steps).unwrap().changes_rows());
}

#[tokio::test]
async fn a_saved_step_this_deployer_does_not_know_fails_loudly() {
    let (_dir, db) = fixture_copy();
    let job = db
        .call(|conn| -> Result<_, ServiceError> { store::require_job(conn, 1) })
        .await
        .unwrap();
    let renamed: Vec<&'static str> = PROVISION_STEPS
        .iter()
        .map(|s| {
            if *s == "push_manifest" {
                "upload_manifest"
            } else {
                *s
            }
        })
        .collect();
    let err = resume::plan(&renamed, &job.steps).unwrap_err();
    assert!(err.contains("saved step push_manifest (7/10)"), "{err}");
    assert!(
        err.contains("upload_manifest"),
        "the current list is named: {err}"
    );
}
