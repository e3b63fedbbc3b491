//! The reaper: fails running jobs whose heartbeat stopped, with the reason, so no job stays
//! "running" forever (Coder's hang detector, per job). The heartbeat is written by the task that
//! drives the step, so a wedged step is caught too, not only a dead process.

use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::jobs::StepState;
use rusqlite::{params, OptionalExtension};

use super::events::human;
use super::runner::Ending;
use super::{states, store, Provisioner};
use crate::error::ServiceError;

pub fn spawn(p: Provisioner) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(p.inner.cfg.reaper_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = p.reap().await {
                tracing::warn!(error = %e, "reaper pass failed");
            }
        }
    })
}

impl Provisioner {
    /// One reaper pass; returns the jobs it failed.
    pub async fn reap(&self) -> Result<Vec<i64>, ServiceError> {
        let now = self.now_ms();
        let stale_after = self.inner.cfg.stale_after_ms as i64;
        let stale = self
            .db()
            .call(move |conn| -> Result<_, ServiceError> {
                Ok(store::stale_jobs(conn, now - stale_after)?)
            })
            .await?;
        let mut reaped = Vec::new();
        for (job_id, heartbeat, step, cancelling) in stale {
            if let Ok(mut workers) = self.inner.workers.lock() {
                if let Some(w) = workers.remove(&job_id) {
                    w.abort();
                }
            }
            let silent = heartbeat.map(|h| human(Duration::from_millis((now - h).max(0) as u64)));
            let step = step.unwrap_or_else(|| "start".into());
            let silent = silent.unwrap_or_else(|| "ever".into());
            // A job stopped in its cancel cleanup ends cancelled (see `Ending::cancel_incomplete`): retrying it
            // would deploy again what the operator cancelled.
            let ending = if cancelling {
                Ending::cancel_incomplete(format!(
                    "cancelled during step {step}, but its cleanup stopped (no heartbeat for {silent}): the gateway \
                     and VM may remain; run `vm delete` for this user or `reconcile --fix`"
                ))
            } else {
                Ending::failed(format!(
                    "no heartbeat for {silent} during step {step}: the worker hung or died; retry_job resumes from this step"
                ))
            };
            let step2 = step.clone();
            let now2 = now;
            self.db()
                .write(move |conn| -> Result<(), ServiceError> {
                    let index: Option<u32> = conn
                        .prepare_cached(
                            "SELECT step_index FROM job_steps WHERE job_id = ?1 AND name = ?2",
                        )?
                        .query_row(params![job_id, step2], |r| r.get(0))
                        .optional()?;
                    if let Some(index) = index {
                        states::move_step(
                            conn,
                            job_id,
                            index,
                            StepState::Failed,
                            "finished_at_ms = ?4, message = 'reaped: no heartbeat'",
                            &[&now2],
                        )?;
                    }
                    Ok(())
                })
                .await?;
            self.finish(job_id, ending).await?;
            tracing::warn!(job_id, step = %step, "reaped a job whose heartbeat stopped");
            reaped.push(job_id);
        }
        Ok(reaped)
    }
}
