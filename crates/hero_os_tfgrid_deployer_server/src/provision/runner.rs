//! Runs jobs — a job's life, start to end, in [`Provisioner::run_job`]: wait for a concurrency
//! slot, match the saved steps to the step table by name ([`super::resume`]), drive the steps in
//! table order from the first one not done, retry transient failures with exponential backoff and
//! jitter inside each step's deadline, write the heartbeat from the same task that drives the
//! step, and handle cancellation (a cancelled provision deletes what it made).
//!
//! Every record goes through the job's [`JobRecorder`]; how and when it is written is the
//! recorder's business ([`super::recorder`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::VmStatus;
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::{human, Draft};
use super::facts::Fact;
use super::recorder::{JobRecorder, SqliteRecorder};
use super::states::{self, VmState};
use super::steps::{self, JobContext, Step, StepAt, StepCx, StepError};
use super::{resume, store, Provisioner};
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
    /// The step's message, and when it started (as recorded in its row).
    Done(String, i64),
    Failed(StepError, u32),
    Cancelled,
    /// Test hook: the step hangs without heartbeats.
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

    /// Runs `fut` while writing the heartbeat, without watching for cancellation: for the cleanup of a job
    /// already cancelled, which can take as long as a step (a grid `destroy`) and must not look dead to the
    /// reaper meanwhile.
    async fn beating<F: Future>(&self, rec: &dyn JobRecorder, fut: F) -> F::Output {
        tokio::pin!(fut);
        let period = self.inner.cfg.heartbeat();
        let mut hb = tokio::time::interval_at(Instant::now() + period, period);
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = hb.tick() => { let _ = rec.heartbeat().await; }
            }
        }
    }

    /// Runs `fut` while writing the heartbeat and watching for cancellation.
    async fn guarded<F: Future>(
        &self,
        rec: &dyn JobRecorder,
        fut: F,
        cancel: &mut watch::Receiver<bool>,
    ) -> Guarded<F::Output> {
        tokio::pin!(fut);
        // First beat one period from now: every caller has just recorded something that beats.
        let period = self.inner.cfg.heartbeat();
        let mut hb = tokio::time::interval_at(Instant::now() + period, period);
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut fut => return Guarded::Finished(out),
                _ = hb.tick() => { let _ = rec.heartbeat().await; }
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() {
                        return Guarded::Cancelled;
                    }
                }
            }
        }
    }

    /// A job's life.
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
        let rec = SqliteRecorder::new(self, &job, &internals.context_json);
        let options: ProvisionOptions =
            serde_json::from_str(&internals.options_json).unwrap_or_default();
        let mut ctx: JobContext = serde_json::from_str(&internals.context_json).unwrap_or_default();
        // Where a cancel finds the job: the step it was in when this worker loaded it.
        let loaded_at = job.current_step.clone();
        if internals.cancel_requested || job.state == JobState::Cancelling || *cancel.borrow() {
            return self
                .cleanup_cancelled(&job, &rec, loaded_at.as_deref())
                .await;
        }

        // 1. A concurrency slot.
        if self.inner.slots.available_permits() == 0 && job.state == JobState::Queued {
            rec.event(Draft::info(format!(
                "queued: all {} job slots are busy; waiting for one",
                self.inner.cfg.max_concurrent_jobs
            )))
            .await?;
        }
        let slots = self.inner.slots.clone();
        let _permit = match self.guarded(&rec, slots.acquire_owned(), cancel).await {
            Guarded::Finished(Ok(p)) => p,
            Guarded::Finished(Err(_)) => {
                return Err(ServiceError::Internal("job slots closed".into()))
            }
            Guarded::Cancelled => {
                return self
                    .cleanup_cancelled(&job, &rec, loaded_at.as_deref())
                    .await
            }
        };

        // 2. The saved steps, matched to this deployer's table by name.
        let table = steps::table(job.kind);
        let names = steps::steps_for(job.kind);
        let count = table.len() as u32;
        let plan = match resume::plan(names, &job.steps) {
            Ok(plan) => plan,
            Err(why) => return rec.finish(Ending::failed(why)).await,
        };
        if plan.changes_rows() {
            rec.steps_matched(&plan).await?;
            rec.event(Draft::info(format!(
                "the job's saved steps were matched by name to this deployer's {count} steps (new: {})",
                plan.added
                    .iter()
                    .map(|(i, n)| format!("{i}/{count} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
            .await?;
        }

        // 3. Running, from the first step not done.
        let resumed_at = plan
            .rows
            .iter()
            .find(|s| s.state != StepState::Done && s.state != StepState::Skipped);
        let what = format!(
            "{} {} on {}",
            job.kind.as_str(),
            job.forge_username,
            job.backend
        );
        rec.running(match resumed_at {
            Some(s) if s.index > 1 || s.attempts > 0 => {
                format!("running: {what}, from step {}/{count} {}", s.index, s.name)
            }
            _ => format!("running: {what} ({count} steps)"),
        })
        .await?;
        let job_started = Instant::now();
        let key = steps::KeyCache::new();

        // 4. The steps, in table order.
        for (step, saved) in table.iter().zip(&plan.rows) {
            if matches!(saved.state, StepState::Done | StepState::Skipped) {
                continue;
            }
            let at = StepAt {
                index: saved.index,
                count,
                name: step.name(),
            };
            self.inner.faults.crash_point(at.name, false);
            let outcome = self
                .run_step(
                    &job,
                    &options,
                    &mut ctx,
                    *step,
                    at,
                    saved.attempts,
                    &rec,
                    &key,
                    cancel,
                )
                .await?;
            match outcome {
                StepOutcome::Done(msg, started_at_ms) => {
                    self.inner.faults.crash_point(at.name, true);
                    rec.step_done(at, started_at_ms, &msg, &ctx).await?;
                }
                StepOutcome::Failed(err, tries) => {
                    self.inner
                        .metrics
                        .step_failed(job.kind.as_str(), at.name, &err.code);
                    let reason = format!(
                        "step {}/{count} {} failed after {tries} attempt(s): {err}",
                        at.index, at.name
                    );
                    rec.step_failed(at, &err, &reason).await?;
                    return rec.finish(Ending::failed(reason)).await;
                }
                StepOutcome::Cancelled => {
                    return self.cleanup_cancelled(&job, &rec, Some(at.name)).await;
                }
                StepOutcome::Stalled => {
                    // Test hook: hang without heartbeats until the reaper aborts this task,
                    // with the job recorded as running this step.
                    std::future::pending::<()>().await;
                }
            }
        }

        // 5. The end.
        rec.finish(Ending::succeeded(ctx.result.clone())).await?;
        tracing::info!(job_id, took = %human(job_started.elapsed()), "job succeeded");
        Ok(())
    }

    /// One run of one step: its attempts, within its deadline.
    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        job: &Job,
        options: &ProvisionOptions,
        ctx: &mut JobContext,
        step: &dyn Step,
        at: StepAt,
        prior_attempts: u32,
        rec: &SqliteRecorder,
        key: &steps::KeyCache,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<StepOutcome, ServiceError> {
        let cfg = &self.inner.cfg;
        let longest = if step.calls_backend() {
            self.backend(&job.backend)
                .ok()
                .and_then(|b| b.longest_call())
        } else {
            None
        };
        let budget = step_budget(
            cfg.step_deadline_secs.get(at.name).copied(),
            step.deadline(),
            longest,
        );
        let started = Instant::now();
        let deadline = started + budget;
        let started_at_ms = self.now_ms();
        let (index, count, name) = (at.index, at.count, at.name);
        // The deadline and the retry policy, said together: whichever ends the step first.
        rec.step_started(
            at,
            prior_attempts + 1,
            format!(
                "step {index}/{count} {name}: started (deadline {}, at most {} attempts)",
                human(budget),
                cfg.max_attempts
            ),
        )
        .await?;
        if self.inner.faults.stall_at(name) {
            return Ok(StepOutcome::Stalled);
        }
        let mut attempt = prior_attempts;
        let mut tries = 0u32;
        loop {
            attempt += 1;
            tries += 1;
            if tries > 1 {
                rec.attempt_started(
                    at,
                    attempt,
                    started.elapsed(),
                    format!(
                        "step {index}/{count} {name}: attempt {attempt}, {}",
                        human(started.elapsed())
                    ),
                )
                .await?;
            }
            let cx = StepCx {
                job,
                options,
                at,
                attempt,
                started,
                deadline,
                env: &self.inner.env,
                backend: self.backend(&job.backend).map_err(StepError::from),
                keys: self,
                records: rec,
                key,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = self
                .guarded(
                    rec,
                    tokio::time::timeout(remaining, step.run(&cx, ctx)),
                    cancel,
                )
                .await;
            let err = match outcome {
                Guarded::Cancelled => return Ok(StepOutcome::Cancelled),
                Guarded::Finished(Ok(Ok(msg))) => {
                    self.inner
                        .metrics
                        .step_finished(job.kind.as_str(), name, started.elapsed());
                    return Ok(StepOutcome::Done(msg, started_at_ms));
                }
                Guarded::Finished(Ok(Err(e))) => e,
                Guarded::Finished(Err(_)) => StepError::fatal(
                    "step.deadline",
                    format!("deadline of {} passed (attempt {attempt})", human(budget)),
                ),
            };
            let backoff = self.backoff(tries);
            let more =
                err.transient && tries < cfg.max_attempts && Instant::now() + backoff < deadline;
            if !more {
                return Ok(StepOutcome::Failed(err, tries));
            }
            self.inner.metrics.step_retried(job.kind.as_str(), name);
            rec.event(
                Draft::info(format!(
                    "step {index}/{count} {name}: attempt {attempt} failed after {}: {err}; retrying in {}",
                    human(started.elapsed()),
                    human(backoff)
                ))
                .level(EventLevel::Warn)
                .step(index, name)
                .attempt(attempt)
                .elapsed(started.elapsed()),
            )
            .await?;
            if let Guarded::Cancelled = self.guarded(rec, tokio::time::sleep(backoff), cancel).await
            {
                return Ok(StepOutcome::Cancelled);
            }
        }
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

    /// Ends a job: state, reason, result, the user's VM status and the final event, in one
    /// transaction (a follower that sees the final state has every event). A step still
    /// `running` in a job that did not succeed is closed with the reason: no view shows it
    /// running forever. The VM row a failed provision was making says `failed`, not
    /// `deploying`.
    pub(crate) async fn finish(&self, job_id: JobId, ending: Ending) -> Result<(), ServiceError> {
        let Ending {
            state,
            error,
            result,
            vm_status,
            level,
        } = ending;
        let now = self.now_ms();
        let now_s = self.deployer().clock.now();
        let result_json = result.and_then(|r| serde_json::to_string(&r).ok());
        self.db()
            .write(move |conn| -> Result<(), ServiceError> {
                let Some(job) = store::job_timing(conn, job_id)? else {
                    return Err(ServiceError::NotFound(format!("no job with job_id {job_id}")));
                };
                if let states::Moved::Refused(_) = states::move_job(conn, job_id, state)? {
                    return Ok(());
                }
                let count = steps::steps_for(job.kind).len() as u32;
                let took = human(Duration::from_millis(
                    (now - job.started_at_ms.unwrap_or(job.created_at_ms)).max(0) as u64,
                ));
                let message = match (state, &error) {
                    (JobState::Succeeded, _) => format!("job succeeded in {took}"),
                    (s, Some(e)) => format!("job {} after {took}: {e}", s.as_str()),
                    (s, None) => format!("job {} after {took}", s.as_str()),
                };
                conn.execute_cached(
                    "UPDATE jobs SET error = ?2, result_json = COALESCE(?3, result_json), finished_at_ms = ?4, \
                     current_step = CASE WHEN ?5 THEN NULL ELSE current_step END WHERE job_id = ?1",
                    rusqlite::params![job_id, error, result_json, now, state == JobState::Succeeded],
                )?;
                if state != JobState::Succeeded {
                    let why = match state {
                        JobState::Cancelled => "cancelled".to_owned(),
                        _ => format!("interrupted: {}", error.as_deref().unwrap_or("the job ended")),
                    };
                    let running: Vec<u32> = conn
                        .prepare_cached(
                            "SELECT step_index FROM job_steps WHERE job_id = ?1 AND state = ?2",
                        )?
                        .query_map(rusqlite::params![job_id, StepState::Running], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    for index in running {
                        states::move_step(
                            conn,
                            job_id,
                            index,
                            StepState::Failed,
                            "finished_at_ms = ?4, duration_ms = ?4 - started_at_ms, message = ?5",
                            &[&now, &why],
                        )?;
                    }
                }
                if state == JobState::Succeeded && job.kind == JobKind::Redeploy {
                    record_redeployed_profile(conn, job_id)?;
                }
                if state == JobState::Succeeded {
                    record_pushed_admins(conn, job_id)?;
                }
                if state == JobState::Failed && job.kind == JobKind::Provision {
                    conn.execute_cached(
                        "UPDATE vms SET state = ?2, updated_at = ?3 WHERE user_id = ?1 AND state = ?4",
                        rusqlite::params![job.user_id, VmState::Failed, now_s, VmState::Deploying],
                    )?;
                }
                if let Some(status) = vm_status {
                    // Whatever ends a repair or redeploy, the VM it worked on is still there: the
                    // user keeps a ready VM (the health watch says whether it answers).
                    let status = if job.kind.works_in_place() {
                        VmStatus::Ready
                    } else {
                        status
                    };
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
    /// decommission just stops (run it again to finish). `during`: the step the cancel stopped
    /// (or that the job was in when this worker loaded it); `None` before any step ran.
    async fn cleanup_cancelled(
        &self,
        job: &Job,
        rec: &SqliteRecorder,
        during: Option<&str>,
    ) -> Result<(), ServiceError> {
        rec.cancelling().await?;
        let at = match during {
            Some(step) => {
                let names = steps::steps_for(job.kind);
                match names.iter().position(|n| *n == step) {
                    Some(i) => format!("step {}/{} {step}", i + 1, names.len()),
                    None => format!("step {step}"),
                }
            }
            None => "start (before any step ran)".to_owned(),
        };
        if job.kind.works_in_place() {
            let reason = format!(
                "cancelled during {at}; the VM, its gateway and its OAuth app stay; {} again to finish",
                job.kind.as_str()
            );
            return rec.finish(Ending::cancelled(reason, VmStatus::Ready)).await;
        }
        if job.kind == JobKind::Decommission {
            let reason = format!(
                "cancelled during {at}; the VM record stays; run decommission_vm again to finish"
            );
            return rec
                .finish(Ending::cancelled(reason, VmStatus::Failed))
                .await;
        }
        rec.event(
            Draft::info("cancel: deleting the gateway and VM this job made")
                .level(EventLevel::Warn),
        )
        .await?;
        let name = steps::resource_name(job.user_id, &job.forge_username)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let backend = self.backend(&job.backend)?;
        let out: hero_os_tfgrid_deployer_backends::OutputSink = {
            // Cleanup output is the job's, not a step's.
            let rec = rec.clone();
            crate::provision::output_log::capped_sink(move |l| {
                rec.note(Draft::info(l).level(EventLevel::Output))
            })
        };
        let mut last = None;
        for tries in 1..=self.inner.cfg.max_attempts {
            let removed = self
                .beating(rec, steps::remove_resources(&*backend, &name, out.clone()))
                .await;
            match removed {
                Ok(()) => {
                    // The VM's OAuth app goes with it (register_sso may have made one).
                    match steps::delete_sso_app::delete_vm_app(
                        self.deployer(),
                        job.user_id,
                        &name.to_string(),
                    )
                    .await
                    {
                        Ok(msg) => rec.note(Draft::info(msg).level(EventLevel::Output)),
                        Err(e) => rec.note(
                            Draft::info(format!(
                                "cancel: the VM's OAuth app could not be deleted ({e}); reconcile or decommission removes it"
                            ))
                            .level(EventLevel::Warn),
                        ),
                    }
                    let now = self.deployer().clock.now();
                    let had_vm = {
                        use steps::StepRecords;
                        rec.record_now(Fact::ResourcesRemoved {
                            user_id: job.user_id,
                            backend: job.backend.clone(),
                            now,
                        })
                        .await?
                            > 0
                    };
                    let status = if had_vm {
                        VmStatus::Decommissioned
                    } else {
                        VmStatus::NoVm
                    };
                    let reason = format!(
                        "cancelled during {at}; cleanup removed the gateway and VM of {name}"
                    );
                    return rec.finish(Ending::cancelled(reason, status)).await;
                }
                Err(e) => {
                    let retry = e.transient && tries < self.inner.cfg.max_attempts;
                    last = Some(e);
                    if !retry {
                        break;
                    }
                    self.beating(rec, tokio::time::sleep(self.backoff(tries)))
                        .await;
                }
            }
        }
        let reason = format!(
            "cancelled during {at}, but cleanup failed: {}; run `vm delete {}` or `reconcile --fix`",
            last.map(|e| e.to_string()).unwrap_or_default(),
            job.forge_username
        );
        rec.finish(Ending::cancel_incomplete(reason)).await
    }
}

/// What a step may spend, all attempts included: the operator's `[provision.step_deadline_secs]` entry if there
/// is one; else the step's own deadline, stretched for a backend call to the backend's longest call plus a
/// minute. Why: the step deadline gives up on the call, which interrupts it (`tofu` on SIGINT), and a grid apply
/// may take its full 50 minutes; a 15-minute step deadline cut every slow apply short.
pub(crate) fn step_budget(
    configured_secs: Option<u64>,
    default: Duration,
    backend_longest_call: Option<Duration>,
) -> Duration {
    match (configured_secs, backend_longest_call) {
        (Some(secs), _) => Duration::from_secs(secs),
        (None, Some(longest)) => default.max(longest + Duration::from_secs(60)),
        (None, None) => default,
    }
}

/// How a job ends: its final state, why, its result, and what the user's VM status becomes.
pub struct Ending {
    state: JobState,
    error: Option<String>,
    result: Option<ProvisionResult>,
    vm_status: Option<VmStatus>,
    level: EventLevel,
}

impl Ending {
    pub(crate) fn failed(reason: String) -> Ending {
        Ending {
            state: JobState::Failed,
            error: Some(reason),
            result: None,
            vm_status: Some(VmStatus::Failed),
            level: EventLevel::Error,
        }
    }

    /// A cancelled job whose cleanup did not finish. Cancelled, not failed: `retry_job` resumes failed jobs,
    /// and resuming this one would deploy again the VM the operator cancelled. What may remain is for `vm
    /// delete` or `reconcile --fix`, as the reason says.
    pub(crate) fn cancel_incomplete(reason: String) -> Ending {
        Ending {
            state: JobState::Cancelled,
            error: Some(reason),
            result: None,
            vm_status: Some(VmStatus::Failed),
            level: EventLevel::Error,
        }
    }

    fn cancelled(reason: String, vm_status: VmStatus) -> Ending {
        Ending {
            state: JobState::Cancelled,
            error: Some(reason),
            result: None,
            vm_status: Some(vm_status),
            level: EventLevel::Warn,
        }
    }

    fn succeeded(result: Option<ProvisionResult>) -> Ending {
        Ending {
            state: JobState::Succeeded,
            error: None,
            result,
            vm_status: None,
            level: EventLevel::Info,
        }
    }
}

/// A job and its internals as read from (or just written to) the database.
pub(crate) struct Loaded(pub(crate) Job, pub(crate) store::JobInternals);

/// A redeploy that succeeded: its VM runs the job's profile from now on (a later repair pushes
/// that one). Inside `finish`'s write, so the job's success and the recorded profile are one fact.
fn record_redeployed_profile(
    conn: &rusqlite::Connection,
    job_id: JobId,
) -> Result<(), ServiceError> {
    let internals = store::internals(conn, job_id)?;
    let options: ProvisionOptions = serde_json::from_str(&internals.options_json).map_err(|e| {
        ServiceError::Internal(format!("the options of job {job_id} cannot be read: {e}"))
    })?;
    let context: steps::JobContext =
        serde_json::from_str(&internals.context_json).map_err(|e| {
            ServiceError::Internal(format!("the context of job {job_id} cannot be read: {e}"))
        })?;
    if let (Some(profile), Some(vm_id)) = (options.profile, context.vm_id) {
        conn.execute_cached(
            "UPDATE vms SET profile = ?2 WHERE vm_id = ?1",
            rusqlite::params![vm_id, profile],
        )?;
    }
    Ok(())
}

/// What `configure_sso` of a succeeded job wrote into the VM, onto the VM row (see
/// `crate::fleet::access`). Only a job that succeeded: one that failed after the step may have
/// left the VM in any state, and an unrecorded list is synced again, which is always safe.
fn record_pushed_admins(conn: &rusqlite::Connection, job_id: JobId) -> Result<(), ServiceError> {
    let internals = store::internals(conn, job_id)?;
    let context: steps::JobContext =
        serde_json::from_str(&internals.context_json).map_err(|e| {
            ServiceError::Internal(format!("the context of job {job_id} cannot be read: {e}"))
        })?;
    if let (Some(admins), Some(vm_id)) = (context.admins_pushed, context.vm_id) {
        conn.execute_cached(
            "UPDATE vms SET admins_pushed = ?2 WHERE vm_id = ?1",
            rusqlite::params![vm_id, admins],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn a_backend_step_gets_at_least_the_backends_longest_call() {
        let m = Duration::from_secs;
        // The operator's entry wins; else the default, stretched to the backend's longest call plus a minute.
        assert_eq!(step_budget(Some(30), m(900), Some(m(4200))), m(30));
        assert_eq!(step_budget(None, m(900), Some(m(4200))), m(4260));
        assert_eq!(step_budget(None, m(900), Some(m(60))), m(900));
        assert_eq!(step_budget(None, m(900), None), m(900));
        // OpenTofu's defaults: a 50-minute apply no longer outlives a 15-minute step.
        use hero_os_tfgrid_deployer_backends::opentofu as tofu;
        let longest =
            tofu::longest_call_with(tofu::DEFAULT_SHORT_TIMEOUT, tofu::DEFAULT_APPLY_TIMEOUT);
        assert!(step_budget(None, m(900), Some(longest)) > tofu::DEFAULT_APPLY_TIMEOUT);
    }

    #[test]
    fn exactly_the_steps_that_call_the_backend_say_so() {
        let calling = |table: &[&dyn steps::Step]| -> Vec<&'static str> {
            table
                .iter()
                .filter(|s| s.calls_backend())
                .map(|s| s.name())
                .collect()
        };
        assert_eq!(calling(steps::PROVISION), ["deploy_vm", "deploy_gateway"]);
        assert_eq!(
            calling(steps::DECOMMISSION),
            ["delete_gateway", "delete_vm"]
        );
    }
}
