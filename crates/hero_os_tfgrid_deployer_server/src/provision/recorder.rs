//! How the runner records a job's life, in the shape of Coder's `JobUpdater` (a step started, a
//! line of output, a step done with its facts, failed, the job finished): [`JobRecorder`], one
//! per run of a job. The runner reads as the job's life; what is written when, and in which
//! transaction, is decided here, behind [`SqliteRecorder`].
//!
//! Write-behind, privately: every record is queued on `Db`'s single writer at once, in call
//! order, and the call returns without waiting for the commit (the writer's group commit puts
//! the records of many jobs into one transaction). Writes commit in the order they were queued,
//! so nothing of a step lands before its start and a job's end lands after everything it
//! recorded. A failed write surfaces at the job's next record and fails the job. Only
//! [`StepRecords::record_now`] (a row a step needs before it acts) and
//! [`JobRecorder::finish`] wait for their commit. Facts a step records "with its outcome" ride
//! in the step's `done` (or failure) write, so they become visible together.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use hero_os_tfgrid_deployer_backends::OutputSink;
use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::UserId;
use rusqlite::{params, Connection};
use tokio::time::Instant;

use super::events::{human, Draft};
use super::facts::Fact;
use super::resume::ResumePlan;
use super::runner::Ending;
use super::states::{self, VmState};
use super::steps::{JobContext, OutLine, StepAt, StepError, StepRecords};
use super::{lock, store, Provisioner};
use crate::audit::{Actor, OwnedEntry};
use crate::db::Cached;
use crate::error::ServiceError;

/// What the runner records about one run of one job. Methods other than `finish` (and
/// [`StepRecords::record_now`]) may return before the record is durable; an error of an earlier
/// record may surface at a later call.
#[async_trait]
pub trait JobRecorder: StepRecords {
    /// The job's saved step rows were matched to this deployer's step list by name, and differ
    /// from it (an upgrade inserted a step): renumber and add rows as planned.
    async fn steps_matched(&self, plan: &ResumePlan) -> Result<(), ServiceError>;
    /// The job runs (again): its state, the user's VM status, the event.
    async fn running(&self, message: String) -> Result<(), ServiceError>;
    /// A step started (attempt `attempt`, counted over every run of the job).
    async fn step_started(
        &self,
        at: StepAt,
        attempt: u32,
        message: String,
    ) -> Result<(), ServiceError>;
    /// Another attempt of the running step.
    async fn attempt_started(
        &self,
        at: StepAt,
        attempt: u32,
        elapsed: Duration,
        message: String,
    ) -> Result<(), ServiceError>;
    /// A step ended well: its message, the job's context as it left it, and the facts it
    /// recorded with its outcome.
    async fn step_done(
        &self,
        at: StepAt,
        started_at_ms: i64,
        message: &str,
        ctx: &JobContext,
    ) -> Result<(), ServiceError>;
    /// A step failed for good (its facts with it, and the audit line of the failed job).
    async fn step_failed(
        &self,
        at: StepAt,
        err: &StepError,
        reason: &str,
    ) -> Result<(), ServiceError>;
    /// A job event outside a step's output (warnings between attempts, cleanup progress).
    async fn event(&self, draft: Draft) -> Result<(), ServiceError>;
    /// The worker is alive.
    async fn heartbeat(&self) -> Result<(), ServiceError>;
    /// A cancel is being carried out.
    async fn cancelling(&self) -> Result<(), ServiceError>;
    /// The job ended. Waits until every record of this run committed, then writes the end.
    async fn finish(&self, ending: Ending) -> Result<(), ServiceError>;
}

/// The job recorder over the state database. Cheap to clone (the output sink of a backend keeps
/// a clone).
#[derive(Clone)]
pub struct SqliteRecorder(Arc<Inner>);

struct Inner {
    p: Provisioner,
    job_id: JobId,
    user_id: UserId,
    kind: JobKind,
    actor: String,
    forge_username: String,
    /// Queued writes not yet seen committed; looked at (never waited for) at each record.
    acks: Mutex<futures::stream::FuturesUnordered<BoxFuture<'static, Result<(), ServiceError>>>>,
    /// Facts of the running step that ride with its outcome.
    with_outcome: Mutex<Vec<Fact>>,
    /// The context as last written, so a step that did not change it does not rewrite it.
    ctx_written: Mutex<String>,
}

impl SqliteRecorder {
    /// `context_json`: the job's context as stored.
    pub(crate) fn new(p: &Provisioner, job: &Job, context_json: &str) -> SqliteRecorder {
        SqliteRecorder(Arc::new(Inner {
            p: p.clone(),
            job_id: job.job_id,
            user_id: job.user_id,
            kind: job.kind,
            actor: job.actor.clone(),
            forge_username: job.forge_username.clone(),
            acks: Mutex::default(),
            with_outcome: Mutex::default(),
            ctx_written: Mutex::new(context_json.to_owned()),
        }))
    }
}

impl SqliteRecorder {
    /// Queues a job event, from synchronous code too (a backend's output sink).
    pub(crate) fn note(&self, draft: Draft) {
        let me = &self.0;
        let row = store::EventRow {
            at_ms: me.p.now_ms(),
            level: draft.level,
            step_index: draft.step.as_ref().map(|(i, _)| *i),
            step: draft.step.map(|(_, n)| n),
            step_count: 0,
            attempt: draft.attempt,
            elapsed_ms: draft.elapsed_ms,
            message: draft.message,
        };
        if row.level != EventLevel::Output {
            tracing::info!(job_id = me.job_id, "{}", row.message);
        }
        let job_id = me.job_id;
        me.queue(move |conn| {
            store::append_event(conn, job_id, &row)?;
            Ok(())
        });
    }
}

impl Inner {
    /// Queues `f` on the writer now; the writer wakes the job's followers once it committed.
    fn queue(&self, f: impl FnOnce(&Connection) -> Result<(), ServiceError> + Send + 'static) {
        let (wake, job_id) = (self.p.clone(), self.job_id);
        let written = self.p.db().write_then(f, move || wake.bump(job_id));
        lock(&self.acks).push(written.boxed());
    }

    /// The first failure among the writes that committed meanwhile.
    fn check(&self) -> Result<(), ServiceError> {
        let mut acks = lock(&self.acks);
        while let Some(Some(written)) = acks.next().now_or_never() {
            written?;
        }
        Ok(())
    }

    /// Waits for every queued write.
    async fn settle(&self) -> Result<(), ServiceError> {
        let pending = std::mem::take(&mut *lock(&self.acks));
        let results: Vec<_> = pending.collect().await;
        results.into_iter().collect()
    }

    fn line(&self, at: StepAt, line: OutLine) {
        let row = store::EventRow::step(
            self.p.now_ms(),
            line.level,
            at.index,
            at.name,
            at.count,
            line.message,
        )
        .attempt(line.attempt)
        .elapsed_ms(line.elapsed.map(|e| e.as_millis() as i64));
        if row.level != EventLevel::Output {
            tracing::info!(job_id = self.job_id, step = at.name, "{}", row.message);
        }
        let job_id = self.job_id;
        self.queue(move |conn| {
            store::append_event(conn, job_id, &row)?;
            Ok(())
        });
    }

    fn take_facts(&self) -> Vec<Fact> {
        std::mem::take(&mut *lock(&self.with_outcome))
    }
}

#[async_trait]
impl StepRecords for SqliteRecorder {
    fn line(&self, at: StepAt, line: OutLine) {
        self.0.line(at, line)
    }

    fn sink(&self, at: StepAt, attempt: u32, started: Instant) -> OutputSink {
        let me = self.0.clone();
        crate::provision::output_log::capped_sink(move |message| {
            me.line(
                at,
                OutLine {
                    level: EventLevel::Output,
                    attempt: Some(attempt),
                    elapsed: Some(started.elapsed()),
                    message,
                },
            )
        })
    }

    async fn record_now(&self, fact: Fact) -> Result<i64, ServiceError> {
        self.0.check()?;
        self.0.p.db().write(move |conn| fact.apply(conn)).await
    }

    fn record_with_outcome(&self, fact: Fact) {
        lock(&self.0.with_outcome).push(fact);
    }
}

#[async_trait]
impl JobRecorder for SqliteRecorder {
    async fn steps_matched(&self, plan: &ResumePlan) -> Result<(), ServiceError> {
        let (job_id, plan) = (self.0.job_id, plan.clone());
        self.0
            .p
            .db()
            .write(move |conn| store::apply_resume_plan(conn, job_id, &plan))
            .await
    }

    async fn running(&self, message: String) -> Result<(), ServiceError> {
        let me = &self.0;
        let (job_id, user_id, kind) = (me.job_id, me.user_id, me.kind);
        let (at_ms, at_s) = (me.p.now_ms(), me.p.deployer().clock.now());
        tracing::info!(job_id, "{message}");
        me.queue(move |conn| {
            if let states::Moved::From(_) = states::move_job(conn, job_id, JobState::Running)? {
                conn.execute_cached(
                    "UPDATE jobs SET started_at_ms = COALESCE(started_at_ms, ?2), heartbeat_at_ms = ?2 WHERE job_id = ?1",
                    params![job_id, at_ms],
                )?;
            }
            if kind == JobKind::Provision {
                // A retried job makes its VM again: the row of its failed attempt is back to
                // `deploying`.
                conn.execute_cached(
                    "UPDATE vms SET state = ?2, updated_at = ?3 WHERE user_id = ?1 AND state = ?4",
                    params![user_id, VmState::Deploying, at_s, VmState::Failed],
                )?;
            }
            store::set_user_vm_status(conn, user_id, store::busy_status(kind), at_s)?;
            store::append_event(
                conn,
                job_id,
                &store::EventRow::job(at_ms, EventLevel::Info, 0, message),
            )?;
            Ok(())
        });
        me.check()
    }

    async fn step_started(
        &self,
        at: StepAt,
        attempt: u32,
        message: String,
    ) -> Result<(), ServiceError> {
        let me = &self.0;
        let (job_id, at_ms) = (me.job_id, me.p.now_ms());
        tracing::info!(job_id, step = at.name, "{message}");
        me.queue(move |conn| {
            states::move_step(
                conn,
                job_id,
                at.index,
                StepState::Running,
                "started_at_ms = ?4, finished_at_ms = NULL, duration_ms = NULL, attempts = ?5",
                &[&at_ms, &attempt],
            )?;
            conn.execute_cached(
                "UPDATE jobs SET current_step = ?2, heartbeat_at_ms = ?3 WHERE job_id = ?1",
                params![job_id, at.name, at_ms],
            )?;
            store::append_event(
                conn,
                job_id,
                &store::EventRow::step(
                    at_ms,
                    EventLevel::Info,
                    at.index,
                    at.name,
                    at.count,
                    message,
                )
                .attempt(Some(attempt)),
            )?;
            Ok(())
        });
        me.check()
    }

    async fn attempt_started(
        &self,
        at: StepAt,
        attempt: u32,
        elapsed: Duration,
        message: String,
    ) -> Result<(), ServiceError> {
        let me = &self.0;
        let (job_id, at_ms) = (me.job_id, me.p.now_ms());
        tracing::info!(job_id, step = at.name, "{message}");
        me.queue(move |conn| {
            conn.execute_cached(
                "UPDATE job_steps SET attempts = ?3 WHERE job_id = ?1 AND step_index = ?2",
                params![job_id, at.index, attempt],
            )?;
            store::append_event(
                conn,
                job_id,
                &store::EventRow::step(
                    at_ms,
                    EventLevel::Info,
                    at.index,
                    at.name,
                    at.count,
                    message,
                )
                .attempt(Some(attempt))
                .elapsed_ms(Some(elapsed.as_millis() as i64)),
            )?;
            Ok(())
        });
        me.check()
    }

    async fn step_done(
        &self,
        at: StepAt,
        started_at_ms: i64,
        message: &str,
        ctx: &JobContext,
    ) -> Result<(), ServiceError> {
        let me = &self.0;
        // Everything but the SQL is done here, not on the writer thread every job shares.
        let ctx_json =
            serde_json::to_string(ctx).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let ctx_json = {
            let mut written = lock(&me.ctx_written);
            // Most steps learn nothing new (a key already known, uploads): no rewrite.
            (ctx_json != *written).then(|| {
                written.clone_from(&ctx_json);
                ctx_json
            })
        };
        let (job_id, at_ms) = (me.job_id, me.p.now_ms());
        let duration_ms = (at_ms - started_at_ms).max(0);
        let text = format!(
            "step {}/{} {}: done in {}: {message}",
            at.index,
            at.count,
            at.name,
            human(Duration::from_millis(duration_ms as u64))
        );
        tracing::info!(job_id, step = at.name, "{text}");
        let event =
            store::EventRow::step(at_ms, EventLevel::Info, at.index, at.name, at.count, text)
                .elapsed_ms(Some(duration_ms));
        let (facts, message) = (me.take_facts(), message.to_owned());
        me.queue(move |conn| {
            for fact in facts {
                fact.apply(conn)?;
            }
            states::move_step(
                conn,
                job_id,
                at.index,
                StepState::Done,
                "finished_at_ms = ?4, duration_ms = ?5, message = ?6",
                &[&at_ms, &duration_ms, &message],
            )?;
            conn.execute_cached(
                "UPDATE jobs SET heartbeat_at_ms = ?2, context_json = COALESCE(?3, context_json) WHERE job_id = ?1",
                params![job_id, at_ms, ctx_json],
            )?;
            store::append_event(conn, job_id, &event)?;
            Ok(())
        });
        me.check()
    }

    async fn step_failed(
        &self,
        at: StepAt,
        err: &StepError,
        reason: &str,
    ) -> Result<(), ServiceError> {
        let me = &self.0;
        let (job_id, now, now_s) = (me.job_id, me.p.now_ms(), me.p.deployer().clock.now());
        let msg = err.to_string();
        let line = OwnedEntry {
            actor: Actor(me.actor.clone()),
            action: format!("vm.{}", me.kind.as_str()),
            subject: format!("user:{}", me.forge_username),
            outcome: format!("error:{}", err.code),
            detail: Some(format!("job {job_id}: {reason}")),
        };
        let facts = me.take_facts();
        me.queue(move |conn| {
            // What the step learned before it failed is true all the same.
            for fact in facts {
                fact.apply(conn)?;
            }
            states::move_step(
                conn,
                job_id,
                at.index,
                StepState::Failed,
                "finished_at_ms = ?4, duration_ms = ?4 - started_at_ms, message = ?5",
                &[&now, &msg],
            )?;
            line.append(conn, now_s)?;
            Ok(())
        });
        me.check()
    }

    async fn event(&self, draft: Draft) -> Result<(), ServiceError> {
        self.note(draft);
        self.0.check()
    }

    async fn heartbeat(&self) -> Result<(), ServiceError> {
        let me = &self.0;
        let (job_id, now) = (me.job_id, me.p.now_ms());
        me.queue(move |conn| store::heartbeat(conn, job_id, now));
        me.check()
    }

    async fn cancelling(&self) -> Result<(), ServiceError> {
        let me = &self.0;
        let (job_id, now) = (me.job_id, me.p.now_ms());
        me.queue(move |conn| {
            if let states::Moved::From(_) = states::move_job(conn, job_id, JobState::Cancelling)? {
                store::heartbeat(conn, job_id, now)?;
            }
            Ok(())
        });
        me.check()
    }

    async fn finish(&self, ending: Ending) -> Result<(), ServiceError> {
        let me = &self.0;
        // Facts of a step that never reported its outcome (cancelled mid-step) are dropped:
        // only facts a re-run finds again are recorded with an outcome.
        me.take_facts();
        me.settle().await?;
        me.p.finish(me.job_id, ending).await
    }
}
