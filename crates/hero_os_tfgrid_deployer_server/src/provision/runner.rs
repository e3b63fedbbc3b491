//! Runs jobs: waits for a concurrency slot, drives the steps in order from the first one not done,
//! retries transient failures with exponential backoff and jitter inside each step's deadline,
//! writes the heartbeat from the same task that drives the step, and handles cancellation (a
//! cancelled provision deletes what it made).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use hero_os_tfgrid_deployer_sdk::jobs::*;
use rusqlite::params;
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::{human, Draft};
use super::steps::{self, JobContext, LaterWrite, LaterWrites, OutLine, Scope, StepError};
use super::{lock, store, Provisioner};
use crate::audit::Actor;
use crate::db::Cached;
use crate::error::ServiceError;

/// This process's handle on a job's worker task.
pub struct Worker {
    cancel: watch::Sender<bool>,
    task: tokio::task::AbortHandle,
    /// Set when the job was made runnable again (retry) while the worker was finishing.
    rerun: Arc<AtomicBool>,
}

impl Worker {
    pub fn abort(self) {
        self.task.abort();
    }
}

enum StepOutcome {
    /// The step's message, the writes it left (see `Scope::write_later`) and when it started
    /// (as recorded in its row).
    Done(String, Vec<LaterWrite>, i64),
    Failed(StepError, u32, Vec<LaterWrite>),
    Cancelled,
    Stalled,
}

enum Guarded<T> {
    Finished(T),
    Cancelled,
}

impl Provisioner {
    /// Starts a worker for the job unless one runs already (then it re-checks the job when done).
    pub(crate) fn spawn_worker(&self, job_id: JobId) {
        self.spawn_worker_with(job_id, None)
    }

    /// Like `spawn_worker`, with the job as its creator just wrote it, which spares the
    /// worker reading it back.
    pub(crate) fn spawn_worker_with(&self, job_id: JobId, fresh: Option<Loaded>) {
        let Ok(mut workers) = self.inner.workers.lock() else {
            return;
        };
        if let Some(w) = workers.get(&job_id) {
            w.rerun.store(true, Ordering::SeqCst);
            let _ = w.cancel.send(false);
            return;
        }
        let (tx, rx) = watch::channel(false);
        let rerun = Arc::new(AtomicBool::new(false));
        let me = self.clone();
        let rerun2 = rerun.clone();
        let handle = tokio::spawn(async move { me.drive(job_id, fresh, rx, rerun2).await });
        workers.insert(
            job_id,
            Worker {
                cancel: tx,
                task: handle.abort_handle(),
                rerun,
            },
        );
    }

    /// Tells the job's worker to stop and clean up; starts one if none runs here.
    pub(crate) fn signal_cancel(&self, job_id: JobId) {
        let found = match self.inner.workers.lock() {
            Ok(workers) => workers.get(&job_id).map(|w| w.cancel.send(true)).is_some(),
            Err(_) => false,
        };
        if !found {
            self.spawn_worker(job_id);
        }
    }

    async fn drive(
        &self,
        job_id: JobId,
        mut fresh: Option<Loaded>,
        mut cancel: watch::Receiver<bool>,
        rerun: Arc<AtomicBool>,
    ) {
        loop {
            if let Err(e) = self.run_job(job_id, fresh.take(), &mut cancel).await {
                tracing::error!(job_id, error = %e, "job worker failed");
                let reason = format!("internal error in the job runner: {e}");
                let _ = self.finish(job_id, Ending::failed(reason)).await;
            }
            let Ok(mut workers) = self.inner.workers.lock() else {
                return;
            };
            if rerun.swap(false, Ordering::SeqCst) {
                continue;
            }
            workers.remove(&job_id);
            return;
        }
    }

    /// Runs `fut` while writing the heartbeat and watching for cancellation.
    async fn guarded<F: Future>(
        &self,
        job_id: JobId,
        fut: F,
        cancel: &mut watch::Receiver<bool>,
    ) -> Guarded<F::Output> {
        tokio::pin!(fut);
        // First beat one period from now: every caller has just written the heartbeat (step start,
        // attempt) or is about to, so an immediate beat would only cost a write.
        let period = self.inner.cfg.heartbeat();
        let mut hb = tokio::time::interval_at(Instant::now() + period, period);
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut fut => return Guarded::Finished(out),
                _ = hb.tick() => { let _ = self.heartbeat(job_id).await; }
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() {
                        return Guarded::Cancelled;
                    }
                }
            }
        }
    }

    pub(crate) async fn heartbeat(&self, job_id: JobId) -> Result<(), ServiceError> {
        let now = self.now_ms();
        self.db()
            .write(move |conn| -> Result<(), ServiceError> {
                conn.prepare_cached(
                    "UPDATE jobs SET heartbeat_at_ms = ?2 WHERE job_id = ?1 AND state IN ('running','cancelling')",
                )?
                .execute(params![job_id, now])?;
                Ok(())
            })
            .await
    }

    async fn run_job(
        &self,
        job_id: JobId,
        fresh: Option<Loaded>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), ServiceError> {
        let Loaded(job, internals) = match fresh {
            Some(loaded) => loaded,
            None => {
                self.db()
                    .call(move |conn| -> Result<_, ServiceError> {
                        Ok(Loaded(
                            store::require_job(conn, job_id)?,
                            store::internals(conn, job_id)?,
                        ))
                    })
                    .await?
            }
        };
        if !job.state.is_active() {
            return Ok(());
        }
        let options: ProvisionOptions =
            serde_json::from_str(&internals.options_json).unwrap_or_default();
        let mut ctx: JobContext = serde_json::from_str(&internals.context_json).unwrap_or_default();
        // The context as stored, so a step that did not change it does not rewrite it.
        let mut ctx_written = internals.context_json.clone();
        if internals.cancel_requested || job.state == JobState::Cancelling || *cancel.borrow() {
            return self.cleanup_cancelled(&job, &ctx).await;
        }

        if self.inner.slots.available_permits() == 0 && job.state == JobState::Queued {
            self.event(
                job_id,
                Draft::info(format!(
                    "queued: all {} job slots are busy; waiting for one",
                    self.inner.cfg.max_concurrent_jobs
                )),
            )
            .await?;
        }
        let slots = self.inner.slots.clone();
        let _permit = match self.guarded(job_id, slots.acquire_owned(), cancel).await {
            Guarded::Finished(Ok(p)) => p,
            Guarded::Finished(Err(_)) => {
                return Err(ServiceError::Internal("job slots closed".into()))
            }
            Guarded::Cancelled => return self.cleanup_cancelled(&job, &ctx).await,
        };

        let names = steps::steps_for(job.kind);
        let resumed_at = job
            .steps
            .iter()
            .find(|s| s.state != StepState::Done && s.state != StepState::Skipped);
        let running = match resumed_at {
            Some(s) if s.index > 1 || s.attempts > 0 => format!(
                "running: {} {} on {}, from step {}/{} {}",
                store::kind_str(job.kind),
                job.forge_username,
                job.backend,
                s.index,
                names.len(),
                s.name
            ),
            _ => format!(
                "running: {} {} on {} ({} steps)",
                store::kind_str(job.kind),
                job.forge_username,
                job.backend,
                names.len()
            ),
        };
        tracing::info!(job_id, "{running}");
        let now = self.now_ms();
        let now_s = self.deployer().clock.now();
        let user_id = job.user_id;
        let count = names.len() as u32;
        // The job runs, the user's VM status says so, the event tells followers: written with
        // the first step's start (see `Pending`).
        let running = Running {
            job_id,
            user_id,
            vm_status: store::busy_status(job.kind),
            at_ms: now,
            at_s: now_s,
            step_count: count,
            message: running,
        };
        let mut pending = Pending::default();
        pending.push(move |conn| running.record(conn));
        let job_started = Instant::now();
        let key = steps::KeyCache::new();
        let mut acks = Acks::new();

        for (i, name) in names.iter().enumerate() {
            let Some(rec) = job.steps.get(i) else { break };
            if matches!(rec.state, StepState::Done | StepState::Skipped) {
                continue;
            }
            self.inner.faults.crash_point(name, false);
            match self
                .run_step(
                    &job,
                    &options,
                    &mut ctx,
                    i as u32 + 1,
                    name,
                    rec.attempts,
                    &mut pending,
                    &key,
                    &mut acks,
                    cancel,
                )
                .await?
            {
                StepOutcome::Done(msg, later, started_at_ms) => {
                    self.inner.faults.crash_point(name, true);
                    pending.extend(later);
                    let done = self.step_done(
                        &job,
                        (i as u32 + 1, name, started_at_ms),
                        &msg,
                        &ctx,
                        &mut ctx_written,
                    )?;
                    pending.done(done);
                }
                StepOutcome::Failed(err, tries, later) => {
                    let index = i as u32 + 1;
                    let reason = format!(
                        "step {index}/{} {name} failed after {tries} attempt(s): {err}",
                        names.len()
                    );
                    // What the step learned, that it failed and the audit line: with the end.
                    pending.extend(later);
                    self.step_failed(&job, index, &err, &reason, &mut pending);
                    return self
                        .finish(job_id, Ending::failed(reason).after(pending))
                        .await;
                }
                StepOutcome::Cancelled => {
                    // What the job held back is true: keep it before cleaning up.
                    pending.write(self, job_id).await?;
                    return self.cleanup_cancelled(&job, &ctx).await;
                }
                StepOutcome::Stalled => {
                    // Test hook: hang without heartbeats until the reaper aborts this task,
                    // with the job recorded as running this step.
                    std::mem::take(&mut pending).write(self, job_id).await?;
                    std::future::pending::<()>().await;
                }
            }
        }
        let result = ctx.result.clone();
        self.finish(job_id, Ending::succeeded(result).after(pending))
            .await?;
        // Committed before the end was (writes commit in order); this only surfaces an error.
        while let Some(written) = acks.next().await {
            written?;
        }
        tracing::info!(job_id, took = %human(job_started.elapsed()), "job succeeded");
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        job: &Job,
        options: &ProvisionOptions,
        ctx: &mut JobContext,
        index: u32,
        name: &'static str,
        prior_attempts: u32,
        pending: &mut Pending,
        key: &steps::KeyCache,
        acks: &mut Acks,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<StepOutcome, ServiceError> {
        let job_id = job.job_id;
        let count = steps::steps_for(job.kind).len() as u32;
        let cfg = &self.inner.cfg;
        let budget = cfg
            .step_deadline_secs
            .get(name)
            .map(|s| Duration::from_secs(*s))
            .unwrap_or_else(|| steps::default_deadline(name));
        let started = Instant::now();
        let deadline = started + budget;
        let first_attempt = prior_attempts + 1;
        // What the job had pending plus this step's start, held until the step writes or waits
        // (see `Held`).
        let mut first = std::mem::take(pending);
        let started_at_ms = self.now_ms();
        let start = StepStart {
            job_id,
            index,
            count,
            name,
            attempt: first_attempt,
            at_ms: started_at_ms,
            message: format!(
                "step {index}/{count} {name}: started (deadline {})",
                human(budget)
            ),
        };
        first.start(start);
        let held = Held::new(first);
        let body = async {
            // Output writes still uncommitted when an attempt ended (see `drain_output`).
            let mut drained = Acks::new();
            let outcome = async {
                if self.inner.faults.stall_at(name) {
                    return Ok::<StepOutcome, ServiceError>(StepOutcome::Stalled);
                }
                // Shared by the attempts: each re-records the same facts, the last one wins.
                let later = LaterWrites::default();
                let mut attempt = prior_attempts;
                let mut tries = 0u32;
                loop {
                    attempt += 1;
                    tries += 1;
                    if tries > 1 {
                        let msg = format!(
                            "step {index}/{count} {name}: attempt {attempt}, {}",
                            human(started.elapsed())
                        );
                        let (at, elapsed) =
                            (self.now_ms(), started.elapsed().as_millis() as i64);
                        // The new attempt joins what is held, and all of it is written now.
                        held.push(move |conn| {
                            conn.execute_cached(
                                "UPDATE job_steps SET attempts = ?3 WHERE job_id = ?1 AND step_index = ?2",
                                params![job_id, index, attempt],
                            )?;
                            store::append_event(
                                conn,
                                job_id,
                                &store::EventRow::step(at, EventLevel::Info, index, name, count, msg)
                                    .attempt(Some(attempt))
                                    .elapsed_ms(Some(elapsed)),
                            )?;
                            Ok(())
                        });
                        held.flush(self, job_id).await?;
                    }
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<OutLine>();
                    let scope = Scope {
                        later: &later,
                        held: &held,
                        p: self,
                        job,
                        options,
                        index,
                        count,
                        name,
                        attempt,
                        started,
                        deadline,
                        out: tx,
                        key,
                    };
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let ctx = &mut *ctx;
                    let watch = &mut *cancel;
                    let step = async move {
                        let outcome = self
                            .guarded(
                                job_id,
                                tokio::time::timeout(remaining, steps::run(&scope, ctx)),
                                watch,
                            )
                            .await;
                        // Ends the output channel (with any sink a backend let go of).
                        drop(scope);
                        outcome
                    };
                    let (outcome, written) =
                        run_beside(step, self.drain_output(job_id, index, name, rx, &held)).await;
                    drained.extend(written);
                    let result = match outcome {
                        Guarded::Cancelled => return Ok(StepOutcome::Cancelled),
                        Guarded::Finished(Ok(r)) => r,
                        Guarded::Finished(Err(_)) => Err(StepError::fatal(
                            "step.deadline",
                            format!("deadline of {} passed (attempt {attempt})", human(budget)),
                        )),
                    };
                    match result {
                        Ok(msg) => {
                            return Ok(StepOutcome::Done(msg, take_later(&later), started_at_ms))
                        }
                        Err(e) => {
                            let backoff = self.backoff(tries);
                            let more = e.transient
                                && tries < cfg.max_attempts
                                && Instant::now() + backoff < deadline;
                            if !more {
                                return Ok(StepOutcome::Failed(e, tries, take_later(&later)));
                            }
                            let warning = Draft::info(format!(
                                "step {index}/{count} {name}: attempt {attempt} failed after {}: {e}; retrying in {}",
                                human(started.elapsed()),
                                human(backoff)
                            ))
                            .level(EventLevel::Warn)
                            .step(index, name)
                            .attempt(attempt)
                            .elapsed(started.elapsed());
                            held.then(self, job_id, || self.queue_events(job_id, vec![warning]))
                                .await?;
                            if let Guarded::Cancelled = self
                                .guarded(job_id, tokio::time::sleep(backoff), cancel)
                                .await
                            {
                                return Ok(StepOutcome::Cancelled);
                            }
                        }
                    }
                }
            }
            .await;
            (outcome, drained)
        };
        tokio::pin!(body);
        // A step that finishes at once (no outside call, nothing written: a key already known,
        // no node to select, the final bookkeeping) leaves its start to the job's next write.
        // Otherwise the start is queued now, and the body runs while it and earlier records
        // commit; it does not wait for them (see `Acks`).
        let (outcome, drained) = match futures::poll!(&mut body) {
            std::task::Poll::Ready(done) => {
                *pending = held.take();
                done
            }
            std::task::Poll::Pending => {
                acks.push(Box::pin(held.flush(self, job_id)));
                body.await
            }
        };
        acks.extend(drained);
        // Writes that committed meanwhile: a failed one fails the job now. The others are
        // looked at after later steps (never waited for, so never waking this task).
        while let Some(Some(written)) = acks.next().now_or_never() {
            written?;
        }
        outcome
    }

    /// Writes a step's output lines as events while it runs. Lines queued while earlier ones
    /// were being written go in one write; writes are polled here so followers see output live,
    /// and those still uncommitted when the step's output ends are returned: the step does not
    /// wait for its output to commit (later writes commit after it).
    async fn drain_output(
        &self,
        job_id: JobId,
        index: u32,
        name: &'static str,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<OutLine>,
        held: &Held,
    ) -> Acks {
        let mut written = Acks::new();
        let mut failed = None;
        loop {
            tokio::select! {
                line = rx.recv() => {
                    let Some(first) = line else { break };
                    let mut lines = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        lines.push(more);
                    }
                    let drafts = lines
                        .into_iter()
                        .map(|line| {
                            let mut d = Draft::info(line.message).level(line.level).step(index, name);
                            d.attempt = line.attempt;
                            d.elapsed_ms = line.elapsed.map(|e| e.as_millis() as i64);
                            d
                        })
                        .collect();
                    let queued = held.then(self, job_id, || self.queue_events(job_id, drafts));
                    written.push(Box::pin(async move { queued.await.map(|_| ()) }));
                }
                Some(result) = written.next(), if !written.is_empty() => {
                    if let Err(e) = result {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = failed {
            written.push(Box::pin(std::future::ready(Err(e))));
        }
        written
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so retries of many
    /// jobs after a shared outage spread out instead of hammering the backend together.
    fn backoff(&self, tries: u32) -> Duration {
        let cfg = &self.inner.cfg;
        let exp = cfg
            .backoff_base_ms
            .saturating_mul(1u64 << tries.saturating_sub(1).min(20))
            .min(cfg.backoff_max_ms);
        let half = exp / 2;
        let jitter = u64::from(
            self.deployer()
                .random
                .below(u32::try_from(half.max(1)).unwrap_or(u32::MAX)),
        );
        Duration::from_millis(half + jitter)
    }

    /// The record of a finished step, written with the job's next write (see [`Pending`]).
    /// Everything but the SQL is done here, not on the writer thread every job shares.
    fn step_done(
        &self,
        job: &Job,
        (index, name, started_at_ms): (u32, &str, i64),
        msg: &str,
        ctx: &JobContext,
        ctx_written: &mut String,
    ) -> Result<StepDone, ServiceError> {
        let ctx_json =
            serde_json::to_string(ctx).map_err(|e| ServiceError::Internal(e.to_string()))?;
        // Most steps that learn nothing new (a key already known, no node to pick, uploads)
        // leave the context as it was: no need to rewrite it.
        let changed = ctx_json != *ctx_written;
        if changed {
            ctx_written.clone_from(&ctx_json);
        }
        let (count, at_ms) = (steps::steps_for(job.kind).len() as u32, self.now_ms());
        let duration_ms = (at_ms - started_at_ms).max(0);
        let event = store::EventRow::step(
            at_ms,
            EventLevel::Info,
            index,
            name,
            count,
            format!(
                "step {index}/{count} {name}: done in {}: {msg}",
                human(Duration::from_millis(duration_ms as u64))
            ),
        )
        .elapsed_ms(Some(duration_ms));
        Ok(StepDone {
            job_id: job.job_id,
            index,
            msg: msg.to_owned(),
            ctx_json: changed.then_some(ctx_json),
            at_ms,
            duration_ms,
            event,
            start: None,
        })
    }

    /// That a step failed, and the audit line of the failed job: written with the job's end.
    fn step_failed(
        &self,
        job: &Job,
        index: u32,
        err: &StepError,
        reason: &str,
        pending: &mut Pending,
    ) {
        let (job_id, now, now_s) = (job.job_id, self.now_ms(), self.deployer().clock.now());
        let msg = err.to_string();
        pending.push(move |conn| {
            conn.execute_cached(
                "UPDATE job_steps SET state = 'failed', finished_at_ms = ?3, duration_ms = ?3 - started_at_ms, message = ?4 \
                 WHERE job_id = ?1 AND step_index = ?2",
                params![job_id, index, now, msg],
            )?;
            Ok(())
        });
        let line = crate::audit::OwnedEntry {
            actor: Actor(job.actor.clone()),
            action: format!("vm.{}", store::kind_str(job.kind)),
            subject: format!("user:{}", job.forge_username),
            outcome: format!("error:{}", err.code),
            detail: Some(format!("job {job_id}: {reason}")),
        };
        pending.push(move |conn| {
            line.append(conn, now_s)?;
            Ok(())
        });
    }

    /// Ends a job: state, reason, result, the user's VM status and the final event, in one
    /// transaction (a follower that sees the final state has every event).
    pub(crate) async fn finish(&self, job_id: JobId, ending: Ending) -> Result<(), ServiceError> {
        let Ending {
            state,
            error,
            result,
            vm_status,
            level,
            pending,
        } = ending;
        let now = self.now_ms();
        let now_s = self.deployer().clock.now();
        let result_json = result.and_then(|r| serde_json::to_string(&r).ok());
        self.db()
            .write(move |conn| -> Result<(), ServiceError> {
                pending.record(conn)?;
                let Some(job) = store::job_timing(conn, job_id)? else {
                    return Err(ServiceError::NotFound(format!("no job with job_id {job_id}")));
                };
                if !job.state.is_active() {
                    return Ok(());
                }
                let count = steps::steps_for(job.kind).len() as u32;
                let took = human(Duration::from_millis(
                    (now - job.started_at_ms.unwrap_or(job.created_at_ms)).max(0) as u64,
                ));
                let message = match (state, &error) {
                    (JobState::Succeeded, _) => format!("job succeeded in {took}"),
                    (s, Some(e)) => format!("job {} after {took}: {e}", store::state_str(s)),
                    (s, None) => format!("job {} after {took}", store::state_str(s)),
                };
                conn.execute_cached(
                    "UPDATE jobs SET state = ?2, error = ?3, result_json = COALESCE(?4, result_json), finished_at_ms = ?5, \
                     current_step = CASE WHEN ?2 = 'succeeded' THEN NULL ELSE current_step END WHERE job_id = ?1",
                    params![job_id, store::state_str(state), error, result_json, now],
                )?;
                if let Some(status) = vm_status {
                    store::set_user_vm_status(conn, job.user_id, status, now_s)?;
                }
                store::append_event(
                    conn,
                    job_id,
                    &store::EventRow::job(now, level, count, message),
                )?;
                Ok(())
            })
            .await?;
        self.drop_bus(job_id);
        Ok(())
    }

    /// A cancelled provision deletes what it made (gateway, VM) and marks the rows; a cancelled
    /// decommission just stops (run it again to finish).
    async fn cleanup_cancelled(&self, job: &Job, _ctx: &JobContext) -> Result<(), ServiceError> {
        let job_id = job.job_id;
        let now = self.now_ms();
        self.db()
            .write(move |conn| -> Result<(), ServiceError> {
                conn.execute_cached(
                    "UPDATE jobs SET state = 'cancelling', heartbeat_at_ms = ?2 WHERE job_id = ?1 AND state IN ('queued','running','cancelling')",
                    params![job_id, now],
                )?;
                Ok(())
            })
            .await?;
        let at = job.current_step.clone().unwrap_or_else(|| "start".into());
        if job.kind == JobKind::Decommission {
            let reason = format!(
                "cancelled during {at}; the VM record stays; run decommission_vm again to finish"
            );
            return self
                .finish(job_id, Ending::cancelled(reason, "failed"))
                .await;
        }
        self.event(
            job_id,
            Draft::info("cancel: deleting the gateway and VM this job made")
                .level(EventLevel::Warn),
        )
        .await?;
        let name = steps::resource_name(job.user_id, &job.forge_username)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let backend = self.backend(&job.backend)?;
        let me = self.clone();
        let out: hero_os_tfgrid_deployer_backends::OutputSink = {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    let _ = me
                        .event(job_id, Draft::info(line).level(EventLevel::Output))
                        .await;
                }
            });
            Arc::new(move |l: &str| {
                let _ = tx.send(l.to_owned());
            })
        };
        let mut last = None;
        for tries in 1..=self.inner.cfg.max_attempts {
            match steps::remove_resources(self, &*backend, job.user_id, &name, out.clone()).await {
                Ok(had_vm) => {
                    let status = if had_vm { "decommissioned" } else { "no_vm" };
                    let reason = format!(
                        "cancelled during {at}; cleanup removed the gateway and VM of {name}"
                    );
                    return self.finish(job_id, Ending::cancelled(reason, status)).await;
                }
                Err(e) => {
                    let retry = e.transient && tries < self.inner.cfg.max_attempts;
                    last = Some(e);
                    if !retry {
                        break;
                    }
                    tokio::time::sleep(self.backoff(tries)).await;
                }
            }
        }
        let reason = format!(
            "cancelled during {at}, but cleanup failed: {}; run `vm delete {}` or `reconcile --fix`",
            last.map(|e| e.to_string()).unwrap_or_default(),
            job.forge_username
        );
        self.finish(job_id, Ending::failed(reason)).await
    }
}

/// Writes a job holds back to ride on its next write instead of paying a commit and a round
/// trip of their own, applied in order: that the job runs, a step's start when the step
/// finished at once, the facts a step recorded (see `Scope::write_later`), a step's completion.
/// Until written, a finished step counts as not done, so a crash runs it again — every step is
/// idempotent.
#[derive(Default)]
pub struct Pending {
    writes: Vec<LaterWrite>,
    /// What the records change in the job's own row, applied once after them: a few steps'
    /// records in one write would otherwise rewrite the row once each.
    job_row: Option<JobRow>,
    /// The last step's start while it is still only here, and where it goes among `writes`.
    /// When that step ends before anything took it to the writer, it started and ended at
    /// once, and its completion records both (see [`Pending::done`]).
    open_start: Option<(usize, StepStart)>,
}

/// The job row's columns that step records change; `None` leaves a column as it is.
struct JobRow {
    job_id: JobId,
    current_step: Option<&'static str>,
    heartbeat_at_ms: Option<i64>,
    context_json: Option<String>,
}

impl Pending {
    fn push(
        &mut self,
        write: impl FnOnce(&rusqlite::Connection) -> Result<(), ServiceError> + Send + 'static,
    ) {
        self.writes.push(Box::new(write));
    }

    fn extend(&mut self, writes: Vec<LaterWrite>) {
        self.writes.extend(writes);
    }

    /// A step's start: its row and event, and the job's current step and heartbeat.
    fn start(&mut self, start: StepStart) {
        let row = self.job_row(start.job_id);
        row.current_step = Some(start.name);
        row.heartbeat_at_ms = Some(start.at_ms);
        self.close_start();
        self.open_start = Some((self.writes.len(), start));
    }

    /// Puts an open start in its place among the writes, as an ordinary record.
    fn close_start(&mut self) {
        if let Some((at, start)) = self.open_start.take() {
            self.writes
                .insert(at, Box::new(move |conn| start.record(conn)));
        }
    }

    /// A step's completion: its row and event, and the job's context when it changed. A step
    /// whose start is still open started and ended at once (a key the job already knew, no node
    /// to pick, the final bookkeeping): one row update and one "done" event record both, where
    /// a "started" event would only be followed by its "done in 0 ms".
    fn done(&mut self, mut done: StepDone) {
        let row = self.job_row(done.job_id);
        row.heartbeat_at_ms = Some(done.at_ms);
        if let Some(ctx) = done.ctx_json.take() {
            row.context_json = Some(ctx);
        }
        if let Some((_, start)) = self.open_start.take_if(|(_, s)| s.index == done.index) {
            done.also_started(start);
        }
        self.push(move |conn| done.record(conn));
    }

    fn job_row(&mut self, job_id: JobId) -> &mut JobRow {
        self.job_row.get_or_insert(JobRow {
            job_id,
            current_step: None,
            heartbeat_at_ms: None,
            context_json: None,
        })
    }

    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.job_row.is_none() && self.open_start.is_none()
    }

    /// Queues these records as one write, now (nothing when there are none); the writer wakes
    /// the job's followers once it committed, and the future reports the write.
    fn write(
        self,
        p: &Provisioner,
        job_id: JobId,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send + 'static {
        let written = (!self.is_empty()).then(|| {
            let wake = p.clone();
            p.db()
                .write_then(move |conn| self.record(conn), move || wake.bump(job_id))
        });
        async move {
            if let Some(written) = written {
                written.await?;
            }
            Ok(())
        }
    }

    fn record(mut self, conn: &rusqlite::Connection) -> Result<(), ServiceError> {
        self.close_start();
        for write in self.writes {
            write(conn)?;
        }
        if let Some(row) = self.job_row {
            conn.execute_cached(
                "UPDATE jobs SET current_step = COALESCE(?2, current_step), heartbeat_at_ms = COALESCE(?3, heartbeat_at_ms), \
                 context_json = COALESCE(?4, context_json) WHERE job_id = ?1",
                params![row.job_id, row.current_step, row.heartbeat_at_ms, row.context_json],
            )?;
        }
        Ok(())
    }
}

/// What a running step holds back: the job's pending records and the step's own start. The
/// first write the step makes — an event, an output line, a row — queues them ahead of itself
/// (writes commit in the order they were queued), so nothing of a step lands before its start.
/// If the step finishes without writing or waiting, they stay pending for the job's next write.
#[derive(Default)]
pub struct Held(std::sync::Mutex<Pending>);

impl Held {
    fn new(pending: Pending) -> Held {
        Held(std::sync::Mutex::new(pending))
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *lock(&self.0))
    }

    fn push(
        &self,
        write: impl FnOnce(&rusqlite::Connection) -> Result<(), ServiceError> + Send + 'static,
    ) {
        lock(&self.0).push(write);
    }

    /// Queues what is held, now (see [`Pending::write`]).
    fn flush(
        &self,
        p: &Provisioner,
        job_id: JobId,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send + 'static {
        self.take().write(p, job_id)
    }

    /// Queues what is held, then what `queue` queues — in that order, which is the point — and
    /// reports the latter once both committed.
    pub(crate) fn then<T, F>(
        &self,
        p: &Provisioner,
        job_id: JobId,
        queue: impl FnOnce() -> F,
    ) -> impl Future<Output = Result<T, ServiceError>> + Send + 'static
    where
        F: Future<Output = Result<T, ServiceError>> + Send + 'static,
    {
        let flushed = self.flush(p, job_id);
        let queued = queue();
        async move {
            flushed.await?;
            queued.await
        }
    }
}

/// Runs `main` and `side` in this task until both end, polling `main` first. When `main` ends
/// in its first poll and so closes `side`'s input, both end in that one poll — which lets a step
/// that needs nothing from outside finish at once (`tokio::join!` may poll `side` first).
async fn run_beside<A: Future, B: Future>(main: A, side: B) -> (A::Output, B::Output) {
    let (mut main, mut side) = (std::pin::pin!(main), std::pin::pin!(side));
    let (mut a, mut b) = (None, None);
    std::future::poll_fn(|cx| {
        if a.is_none() {
            if let std::task::Poll::Ready(v) = main.as_mut().poll(cx) {
                a = Some(v);
            }
        }
        if b.is_none() {
            if let std::task::Poll::Ready(v) = side.as_mut().poll(cx) {
                b = Some(v);
            }
        }
        match (a.take(), b.take()) {
            (Some(a), Some(b)) => std::task::Poll::Ready((a, b)),
            (x, y) => {
                (a, b) = (x, y);
                std::task::Poll::Pending
            }
        }
    })
    .await
}

fn take_later(later: &LaterWrites) -> Vec<LaterWrite> {
    std::mem::take(&mut *lock(later))
}

/// A step started (again): its row and event (the job row's part is in [`Pending::start`]).
struct StepStart {
    job_id: JobId,
    index: u32,
    count: u32,
    name: &'static str,
    attempt: u32,
    at_ms: i64,
    message: String,
}

impl StepStart {
    fn record(self, conn: &rusqlite::Connection) -> Result<(), ServiceError> {
        let StepStart {
            job_id,
            index,
            count,
            name,
            attempt,
            at_ms,
            message,
        } = self;
        conn.execute_cached(
            "UPDATE job_steps SET state = 'running', started_at_ms = ?3, finished_at_ms = NULL, duration_ms = NULL, \
             attempts = ?4 WHERE job_id = ?1 AND step_index = ?2",
            params![job_id, index, at_ms, attempt],
        )?;
        store::append_event(
            conn,
            job_id,
            &store::EventRow::step(at_ms, EventLevel::Info, index, name, count, message)
                .attempt(Some(attempt)),
        )?;
        Ok(())
    }
}

/// The job started running (again).
struct Running {
    job_id: JobId,
    user_id: hero_os_tfgrid_deployer_sdk::types::UserId,
    vm_status: &'static str,
    at_ms: i64,
    at_s: i64,
    step_count: u32,
    message: String,
}

impl Running {
    fn record(&self, conn: &rusqlite::Connection) -> Result<(), ServiceError> {
        conn.execute_cached(
            "UPDATE jobs SET state = 'running', started_at_ms = COALESCE(started_at_ms, ?2), heartbeat_at_ms = ?2 \
             WHERE job_id = ?1 AND state IN ('queued','running')",
            params![self.job_id, self.at_ms],
        )?;
        store::set_user_vm_status(conn, self.user_id, self.vm_status, self.at_s)?;
        store::append_event(
            conn,
            self.job_id,
            &store::EventRow::job(
                self.at_ms,
                EventLevel::Info,
                self.step_count,
                self.message.clone(),
            ),
        )?;
        Ok(())
    }
}

/// A step that finished.
pub(crate) struct StepDone {
    job_id: JobId,
    index: u32,
    msg: String,
    /// The job's context when the step changed it.
    ctx_json: Option<String>,
    at_ms: i64,
    duration_ms: i64,
    event: store::EventRow,
    /// The step's start, when it is recorded together with its end (see [`Pending::done`]).
    start: Option<StepStart>,
}

impl StepDone {
    fn also_started(&mut self, start: StepStart) {
        self.event.attempt = Some(start.attempt);
        self.start = Some(start);
    }

    /// Step state, duration and message (and its start, when recorded together), and the "done"
    /// event (the job row's part is in [`Pending::done`]).
    fn record(&self, conn: &rusqlite::Connection) -> Result<(), ServiceError> {
        conn.execute_cached(
            "UPDATE job_steps SET state = 'done', finished_at_ms = ?3, duration_ms = ?4, message = ?5, \
             started_at_ms = COALESCE(?6, started_at_ms), attempts = COALESCE(?7, attempts) \
             WHERE job_id = ?1 AND step_index = ?2",
            params![
                self.job_id,
                self.index,
                self.at_ms,
                self.duration_ms,
                self.msg,
                self.start.as_ref().map(|s| s.at_ms),
                self.start.as_ref().map(|s| s.attempt)
            ],
        )?;
        store::append_event(conn, self.job_id, &self.event)?;
        Ok(())
    }
}

/// How a job ends: its final state, why, its result, and what the user's VM status becomes.
pub(crate) struct Ending {
    state: JobState,
    error: Option<String>,
    result: Option<ProvisionResult>,
    vm_status: Option<&'static str>,
    level: EventLevel,
    /// What the job had not written yet (see `Pending`).
    pending: Pending,
}

impl Ending {
    pub(crate) fn failed(reason: String) -> Ending {
        Ending {
            state: JobState::Failed,
            error: Some(reason),
            result: None,
            vm_status: Some("failed"),
            level: EventLevel::Error,
            pending: Pending::default(),
        }
    }

    fn cancelled(reason: String, vm_status: &'static str) -> Ending {
        Ending {
            state: JobState::Cancelled,
            error: Some(reason),
            result: None,
            vm_status: Some(vm_status),
            level: EventLevel::Warn,
            pending: Pending::default(),
        }
    }

    /// The same ending, written after what the job still held back.
    fn after(mut self, pending: Pending) -> Ending {
        self.pending = pending;
        self
    }

    fn succeeded(result: Option<ProvisionResult>) -> Ending {
        Ending {
            state: JobState::Succeeded,
            error: None,
            result,
            vm_status: None,
            level: EventLevel::Info,
            pending: Pending::default(),
        }
    }
}

/// A job and its internals as read from (or just written to) the database.
pub(crate) struct Loaded(pub(crate) Job, pub(crate) store::JobInternals);

/// Records a job has queued but not yet seen committed (step starts, output lines). A step
/// does not wait for its own start record: nothing in a step reads it, and a crash before it
/// commits only means the step runs again (steps are idempotent). Followers are woken by the
/// writer as each one commits (`Db::write_then`), so the job's task is not; it looks at the set
/// after each step (a failed write fails the job) and waits for the rest at the job's end.
/// Writes commit in the order they were queued, so a later record never lands before an
/// earlier one.
pub(crate) type Acks = futures::stream::FuturesUnordered<
    futures::future::BoxFuture<'static, Result<(), ServiceError>>,
>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clock::{OsRandom, SystemClock};
    use crate::db::Db;
    use crate::forge::http::{AdminTokenSource, HttpForge, RetryPolicy};
    use crate::provision::agent::SshHttpAgent;
    use crate::provision::config::ProvisionConfig;
    use crate::provision::faults::Faults;
    use crate::provision::Parts;
    use crate::service::{CoreSettings, Deployer};
    use hero_secrets::MemorySecretStore;

    /// A provisioner over an in-memory database with one queued job; nothing here reaches
    /// Forge (its URL is never called) or a backend.
    async fn provisioner_with_job() -> (Provisioner, Job) {
        let db = Db::open_in_memory().unwrap();
        let secrets = Arc::new(MemorySecretStore::new());
        let forge = HttpForge::new(
            "http://127.0.0.1:9",
            Duration::from_secs(1),
            AdminTokenSource::Slot(secrets.clone()),
            RetryPolicy::default(),
            Arc::new(OsRandom),
        )
        .unwrap();
        let p = Provisioner::new(Parts {
            deployer: Deployer {
                db: db.clone(),
                secrets,
                forge: Arc::new(forge),
                clock: Arc::new(SystemClock),
                random: Arc::new(OsRandom),
                settings: Arc::new(CoreSettings {
                    email_domain: "x.test".into(),
                    user_token_scopes: Vec::new(),
                }),
            },
            config: ProvisionConfig::default(),
            backends: BTreeMap::new(),
            agent: Arc::new(SshHttpAgent),
            bootstrap_script: String::new(),
            faults: Faults::none(),
        });
        let job_id = db
            .write(|conn| {
                conn.execute(
                    "INSERT INTO users(forge_username, email, created_at, updated_at) VALUES ('alice','a@x.test',1,1)",
                    [],
                )?;
                store::insert_job(
                    conn,
                    &store::NewJob {
                        user_id: 1,
                        forge_username: "alice",
                        kind: JobKind::Provision,
                        backend: "local",
                        actor: "test",
                        options_json: "{}",
                        context_json: "{}",
                        steps: steps::PROVISION_STEPS,
                        now_ms: 0,
                    },
                )
            })
            .await
            .unwrap();
        let job = p.get_job(job_id).await.unwrap();
        (p, job)
    }

    /// The start of provision step `index` of `job`.
    fn step_start(job: &Job, index: u32, attempt: u32, at_ms: i64) -> StepStart {
        let name = steps::PROVISION_STEPS[index as usize - 1];
        StepStart {
            job_id: job.job_id,
            index,
            count: 10,
            name,
            attempt,
            at_ms,
            message: format!("step {index}/10 {name}: started"),
        }
    }

    fn held_start(job: &Job, index: u32) -> Held {
        let mut pending = Pending::default();
        pending.start(step_start(job, index, 1, 1));
        Held::new(pending)
    }

    async fn messages(p: &Provisioner, job_id: JobId) -> Vec<String> {
        let page = p
            .job_events(JobEventsParams {
                job_id,
                after_seq: 0,
                wait_ms: 0,
                limit: None,
            })
            .await
            .unwrap();
        page.events.into_iter().map(|e| e.message).collect()
    }

    #[tokio::test]
    async fn what_a_step_writes_lands_after_its_held_start() {
        let (p, job) = provisioner_with_job().await;
        let held = held_start(&job, 4);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (options, key, later) = (
            ProvisionOptions::default(),
            steps::KeyCache::new(),
            LaterWrites::default(),
        );
        let scope = Scope {
            p: &p,
            job: &job,
            options: &options,
            index: 4,
            count: 10,
            name: "deploy_vm",
            attempt: 1,
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(30),
            out: tx,
            key: &key,
            later: &later,
            held: &held,
        };
        // A progress message and an output line: the drain queues the held start ahead of them.
        scope.say("said");
        scope.line(EventLevel::Output, Some(1), "first line".into());
        drop(scope);
        let mut written = p.drain_output(job.job_id, 4, "deploy_vm", rx, &held).await;
        while let Some(w) = written.next().await {
            w.unwrap();
        }
        assert_eq!(
            messages(&p, job.job_id).await,
            ["step 4/10 deploy_vm: started", "said", "first line"]
        );

        // A row the step needs before it acts: written after the start held for its step.
        let held = held_start(&job, 5);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = Scope {
            index: 5,
            name: "deploy_gateway",
            out: tx,
            held: &held,
            p: &p,
            job: &job,
            options: &options,
            count: 10,
            attempt: 1,
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(30),
            key: &key,
            later: &later,
        };
        let job_id = job.job_id;
        let state: String = scope
            .write(move |conn| {
                Ok(conn.query_row(
                    "SELECT state FROM job_steps WHERE job_id = ?1 AND step_index = 5",
                    [job_id],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(state, "running", "the step's own write sees its start");
        assert_eq!(
            messages(&p, job.job_id).await[3..],
            ["step 5/10 deploy_gateway: started"]
        );
    }

    #[tokio::test]
    async fn a_step_that_ends_before_its_start_was_written_is_one_record() {
        let (p, job) = provisioner_with_job().await;
        let step = |index: u32| {
            let job_id = job.job_id;
            p.db().call(move |conn| -> Result<(String, i64, Option<i64>, Option<i64>), ServiceError> {
                Ok(conn.query_row(
                    "SELECT state, attempts, started_at_ms, duration_ms FROM job_steps WHERE job_id = ?1 AND step_index = ?2",
                    params![job_id, index],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?)
            })
        };
        // Step 2 starts (attempt 3: earlier runs tried it) and ends while its start is still
        // pending; step 3 starts, and its start is written before it ends.
        let start = |index: u32, attempt: u32, at_ms: i64| step_start(&job, index, attempt, at_ms);
        let done = |index: u32, started_at_ms: i64| {
            let name = steps::PROVISION_STEPS[index as usize - 1];
            StepDone {
                job_id: job.job_id,
                index,
                msg: "ok".into(),
                ctx_json: None,
                at_ms: started_at_ms + 5,
                duration_ms: 5,
                event: store::EventRow::step(
                    started_at_ms + 5,
                    EventLevel::Info,
                    index,
                    name,
                    10,
                    format!("step {index}/10 {name}: done in 5 ms: ok"),
                ),
                start: None,
            }
        };
        let mut pending = Pending::default();
        pending.start(start(2, 3, 100));
        pending.done(done(2, 100));
        pending.start(start(3, 1, 200));
        pending.write(&p, job.job_id).await.unwrap();
        let mut pending = Pending::default();
        pending.done(done(3, 200));
        pending.write(&p, job.job_id).await.unwrap();

        assert_eq!(
            step(2).await.unwrap(),
            ("done".into(), 3, Some(100), Some(5)),
            "start and end in one row update"
        );
        assert_eq!(
            step(3).await.unwrap(),
            ("done".into(), 1, Some(200), Some(5))
        );
        let page = p
            .job_events(JobEventsParams {
                job_id: job.job_id,
                after_seq: 0,
                wait_ms: 0,
                limit: None,
            })
            .await
            .unwrap();
        let events: Vec<(String, Option<u32>)> = page
            .events
            .into_iter()
            .map(|e| (e.message, e.attempt))
            .collect();
        assert_eq!(
            events,
            [
                ("step 2/10 ssh_key: done in 5 ms: ok".to_owned(), Some(3)),
                ("step 3/10 select_node: started".to_owned(), Some(1)),
                ("step 3/10 select_node: done in 5 ms: ok".to_owned(), None),
            ]
        );
    }

    #[tokio::test]
    async fn run_beside_ends_in_one_poll_when_main_closes_the_side() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let main = async move {
            tx.send(7).unwrap();
            "main"
        };
        let side = async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        };
        let both = std::pin::pin!(run_beside(main, side));
        match futures::poll!(both) {
            std::task::Poll::Ready(out) => assert_eq!(out, ("main", vec![7])),
            std::task::Poll::Pending => panic!("should end in its first poll"),
        }
    }
}
