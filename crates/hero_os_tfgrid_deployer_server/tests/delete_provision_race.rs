//! `delete_user` racing `provision_vm` of the same user (two operators, a script and a click), against
//! the real server, dev Forge and local backend: never both. Before, both could succeed and leave a VM
//! record — possibly a real VM — whose user no longer exists, which no call could remove.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::{Client, Endpoint, ErrorKind};
use support_jobs::*;

/// Users raced, each by one delete and one deploy released together.
const USERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_is_either_deleted_or_deployed_never_both() {
    let (stack, _faults) = stack(vec![(
        "HERO_DEPLOYER_HEALTH_INTERVAL_SECS".into(),
        "0".into(),
    )])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client().clone();
    let mut ids = Vec::new();
    for i in 0..USERS {
        ids.push(new_user(&c, &format!("race{i}")).await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(USERS * 2));
    let mut tasks = Vec::new();
    for &id in &ids {
        for delete in [true, false] {
            let client = Client::new(Endpoint::Unix(stack.server.socket.clone()));
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                if delete {
                    (id, true, client.delete_user(id).await.map(|_| None))
                } else {
                    (id, false, client.provision_vm(id, None).await.map(Some))
                }
            }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for &id in &ids {
        let mine: Vec<_> = results.iter().filter(|(u, _, _)| *u == id).collect();
        let deleted = mine.iter().any(|(_, d, r)| *d && r.is_ok());
        let job = mine
            .iter()
            .find_map(|(_, d, r)| (!*d).then(|| r.as_ref().ok().cloned().flatten()))
            .flatten();
        assert!(
            !(deleted && job.is_some()),
            "user {id}: deleted and deployed"
        );
        for (_, d, r) in &mine {
            if let Err(e) = r {
                let kind = e.kind();
                assert!(
                    matches!(
                        kind,
                        Some(ErrorKind::FailedPrecondition | ErrorKind::NotFound)
                    ),
                    "user {id} ({}): {e}",
                    if *d { "delete" } else { "deploy" }
                );
            }
        }
        match job {
            // The deploy won: it runs to the end, the user is still there, and cleans up after itself.
            Some(job) => {
                let (job, events) = follow(&c, job.job_id).await;
                assert_eq!(job.state, JobState::Succeeded, "{}", messages(&events));
                assert!(c.get_user(id).await.is_ok());
                let d = c.decommission_vm(id).await.unwrap();
                assert_eq!(follow(&c, d.job_id).await.0.state, JobState::Succeeded);
            }
            // The delete won: the user is gone and no VM or job of theirs exists.
            None => {
                assert!(deleted, "user {id}: neither happened: {mine:?}");
                assert_eq!(
                    c.get_user(id).await.unwrap_err().kind(),
                    Some(ErrorKind::NotFound)
                );
                let jobs = c
                    .call::<hero_os_tfgrid_deployer_sdk::methods::ListJobs>(&ListJobsParams {
                        user_id: Some(id),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert!(jobs.jobs.is_empty(), "user {id}: {:?}", jobs.jobs);
            }
        }
    }
    let vms = c.list_vms(None).await.unwrap();
    assert!(vms.vms.is_empty(), "{:?}", vms.vms);
}
