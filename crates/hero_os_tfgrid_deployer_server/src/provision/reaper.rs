//! The reaper: fails running jobs whose heartbeat stopped, with the reason, so no job stays
//! "running" forever (Coder's hang detector, per job). The heartbeat is written by the task that
//! drives the step, so a wedged step is caught too, not only a dead process.

use std::time::Duration;

use rusqlite::params;

use super::events::human;
use super::runner::Ending;
use super::{store, Provisioner};
use crate::db::Cached;
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
        for (job_id, heartbeat, step) in stale {
            if let Ok(mut workers) = self.inner.workers.lock() {
                if let Some(w) = workers.remove(&job_id) {
                    w.abort();
                }
            }
            let silent = heartbeat.map(|h| human(Duration::from_millis((now - h).max(0) as u64)));
            let step = step.unwrap_or_else(|| "start".into());
            let reason = format!(
                "no heartbeat for {} during step {step}: the worker hung or died; retry_job resumes from this step",
                silent.unwrap_or_else(|| "ever".into())
            );
            let step2 = step.clone();
            let now2 = now;
            self.db()
                .write(move |conn| -> Result<(), ServiceError> {
                    conn.execute_cached(
                        "UPDATE job_steps SET state = 'failed', finished_at_ms = ?3, message = 'reaped: no heartbeat' \
                         WHERE job_id = ?1 AND name = ?2 AND state = 'running'",
                        params![job_id, step2, now2],
                    )?;
                    Ok(())
                })
                .await?;
            self.finish(job_id, Ending::failed(reason)).await?;
            tracing::warn!(job_id, step = %step, "reaped a job whose heartbeat stopped");
            reaped.push(job_id);
        }
        Ok(reaped)
    }
}
