//! sqlite persistence of jobs, their steps and their events. Synchronous functions on a
//! connection, called from [`crate::db::Db::call`]; the runner composes them in transactions.

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::{UserId, VmStatus};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::ServiceError;

/// What a new job row holds.
pub struct NewJob<'a> {
    pub user_id: UserId,
    pub forge_username: &'a str,
    pub kind: JobKind,
    pub backend: &'a str,
    pub actor: &'a str,
    pub options_json: &'a str,
    /// What the job knows before its first step (`{}` when nothing).
    pub context_json: &'a str,
    pub steps: &'a [&'a str],
    pub now_ms: i64,
}

/// The user's VM status while a job of `kind` is queued or running.
pub fn busy_status(kind: JobKind) -> VmStatus {
    match kind {
        JobKind::Provision => VmStatus::Provisioning,
        JobKind::Decommission => VmStatus::Decommissioning,
        // The VM stays live (and reachable as far as it is) while it is repaired.
        JobKind::Repair | JobKind::Redeploy | JobKind::SyncAccess => VmStatus::Ready,
    }
}

/// A write broke a UNIQUE constraint (e.g. a second active job for one user).
pub fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// The user's active job, if any.
pub fn active_job_of(
    conn: &Connection,
    user_id: UserId,
) -> rusqlite::Result<Option<(JobId, JobKind, JobState)>> {
    conn.prepare_cached(
        "SELECT job_id, kind, state FROM jobs WHERE user_id = ?1 AND state IN ('queued','running','cancelling')",
    )?
    .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .optional()
}

/// The error a second request for a busy user gets: it names the running job.
pub fn conflict(conn: &Connection, user_id: UserId, username: &str) -> ServiceError {
    match active_job_of(conn, user_id) {
        Ok(Some((job_id, kind, state))) => ServiceError::JobConflict {
            message: format!(
                "user {username} already has an active job: job {job_id} ({}, {}); follow it with `job follow {job_id}` or cancel it first",
                kind.as_str(),
                state.as_str()
            ),
            detail: serde_json::json!({ "job_id": job_id, "kind": kind, "state": state }),
        },
        _ => ServiceError::JobConflict {
            message: format!("user {username} already has an active job"),
            detail: serde_json::Value::Null,
        },
    }
}

/// Inserts the job (state `queued`) and its pending steps. A second active job for the same
/// user violates the partial unique index and becomes [`ServiceError::JobConflict`].
pub fn insert_job(conn: &Connection, j: &NewJob<'_>) -> Result<JobId, ServiceError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs(user_id, forge_username, kind, state, backend, actor, options_json, context_json, created_at_ms) \
             VALUES (?1, ?2, ?3, ?9, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            j.user_id,
            j.forge_username,
            j.kind,
            j.backend,
            j.actor,
            j.options_json,
            j.context_json,
            j.now_ms,
            JobState::Queued
        ]);
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(conflict(conn, j.user_id, j.forge_username))
        }
        Err(e) => return Err(e.into()),
    }
    let job_id = conn.last_insert_rowid();
    // All steps in one statement: job creation is on the path of every request.
    let names =
        serde_json::to_string(j.steps).map_err(|e| ServiceError::Internal(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO job_steps(job_id, step_index, name) SELECT ?1, key + 1, value FROM json_each(?2)",
    )?
    .execute(params![job_id, names])?;
    Ok(job_id)
}

/// The job exactly as [`insert_job`] stored it, without reading it back: job creation is on the
/// path of every request, and its write is the one every new job waits for.
pub fn as_inserted(j: &NewJob<'_>, job_id: JobId) -> (Job, JobInternals) {
    let steps = j
        .steps
        .iter()
        .enumerate()
        .map(|(i, name)| StepRecord {
            index: i as u32 + 1,
            name: (*name).to_owned(),
            state: StepState::Pending,
            attempts: 0,
            started_at_ms: None,
            finished_at_ms: None,
            duration_ms: None,
            message: None,
        })
        .collect();
    let job = Job {
        job_id,
        user_id: j.user_id,
        forge_username: j.forge_username.to_owned(),
        kind: j.kind,
        state: JobState::Queued,
        backend: j.backend.to_owned(),
        actor: j.actor.to_owned(),
        steps,
        current_step: None,
        error: None,
        created_at_ms: j.now_ms,
        started_at_ms: None,
        finished_at_ms: None,
        heartbeat_at_ms: None,
        result: None,
    };
    let internals = JobInternals {
        options_json: j.options_json.to_owned(),
        context_json: j.context_json.to_owned(),
        cancel_requested: false,
    };
    (job, internals)
}

const JOB_COLUMNS: &str =
    "job_id, user_id, forge_username, kind, state, backend, actor, current_step, error, \
    created_at_ms, started_at_ms, finished_at_ms, heartbeat_at_ms, result_json";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let result: Option<String> = r.get(13)?;
    Ok(Job {
        job_id: r.get(0)?,
        user_id: r.get(1)?,
        forge_username: r.get(2)?,
        kind: r.get(3)?,
        state: r.get(4)?,
        backend: r.get(5)?,
        actor: r.get(6)?,
        steps: Vec::new(),
        current_step: r.get(7)?,
        error: r.get(8)?,
        created_at_ms: r.get(9)?,
        started_at_ms: r.get(10)?,
        finished_at_ms: r.get(11)?,
        heartbeat_at_ms: r.get(12)?,
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

pub fn steps_of(conn: &Connection, job_id: JobId) -> rusqlite::Result<Vec<StepRecord>> {
    conn.prepare_cached(
        "SELECT step_index, name, state, attempts, started_at_ms, finished_at_ms, duration_ms, message \
         FROM job_steps WHERE job_id = ?1 ORDER BY step_index",
    )?
    .query_map([job_id], |r| {
        Ok(StepRecord {
            index: r.get(0)?,
            name: r.get(1)?,
            state: r.get(2)?,
            attempts: r.get(3)?,
            started_at_ms: r.get(4)?,
            finished_at_ms: r.get(5)?,
            duration_ms: r.get(6)?,
            message: r.get(7)?,
        })
    })?
    .collect()
}

pub fn load_job(conn: &Connection, job_id: JobId) -> rusqlite::Result<Option<Job>> {
    let job = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?1"))?
        .query_row([job_id], job_from_row)
        .optional()?;
    match job {
        Some(mut job) => {
            job.steps = steps_of(conn, job_id)?;
            Ok(Some(job))
        }
        None => Ok(None),
    }
}

pub fn require_job(conn: &Connection, job_id: JobId) -> Result<Job, ServiceError> {
    load_job(conn, job_id)?
        .ok_or_else(|| ServiceError::NotFound(format!("no job with job_id {job_id}")))
}

/// Internal facts of a job the wire type does not carry.
pub struct JobInternals {
    pub options_json: String,
    pub context_json: String,
    pub cancel_requested: bool,
}

pub fn internals(conn: &Connection, job_id: JobId) -> rusqlite::Result<JobInternals> {
    conn.prepare_cached(
        "SELECT options_json, context_json, cancel_requested FROM jobs WHERE job_id = ?1",
    )?
    .query_row([job_id], |r| {
        Ok(JobInternals {
            options_json: r.get(0)?,
            context_json: r.get(1)?,
            cancel_requested: r.get(2)?,
        })
    })
}

pub fn list_jobs(conn: &Connection, p: &ListJobsParams) -> Result<JobsPage, ServiceError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ServiceError::InvalidParams(format!(
            "limit must be between 1 and 200, got {limit}"
        )));
    }
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id < ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![p.before.unwrap_or(i64::MAX).into()];
    if let Some(user_id) = p.user_id {
        args.push(user_id.into());
        sql.push_str(&format!(" AND user_id = ?{}", args.len()));
    }
    if p.active_only == Some(true) {
        sql.push_str(" AND state IN ('queued','running','cancelling')");
    }
    args.push(rusqlite::types::Value::Integer(i64::from(limit) + 1));
    sql.push_str(&format!(" ORDER BY job_id DESC LIMIT ?{}", args.len()));
    let mut jobs = conn
        .prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(args), job_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_before = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| j.job_id)
    } else {
        None
    };
    for job in &mut jobs {
        job.steps = steps_of(conn, job.job_id)?;
    }
    Ok(JobsPage { jobs, next_before })
}

pub fn active_job_ids(conn: &Connection) -> rusqlite::Result<Vec<JobId>> {
    conn.prepare_cached(
        "SELECT job_id FROM jobs WHERE state IN ('queued','running','cancelling') ORDER BY job_id",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// Running or cancelling jobs whose heartbeat is older than `before_ms`.
/// A job the reaper should fail: id, last heartbeat, step it was in.
/// A job whose heartbeat stopped: id, last beat, current step, and whether it was cancelling (its cleanup).
pub type StaleJob = (JobId, Option<i64>, Option<String>, bool);

pub fn stale_jobs(conn: &Connection, before_ms: i64) -> rusqlite::Result<Vec<StaleJob>> {
    conn.prepare_cached(
        "SELECT job_id, heartbeat_at_ms, current_step, state = 'cancelling' FROM jobs \
         WHERE state IN ('running','cancelling') AND COALESCE(heartbeat_at_ms, started_at_ms, created_at_ms) < ?1",
    )?
    .query_map([before_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
    .collect()
}

/// One event to append.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub at_ms: i64,
    pub level: EventLevel,
    pub step: Option<String>,
    pub step_index: Option<u32>,
    pub step_count: u32,
    pub attempt: Option<u32>,
    pub elapsed_ms: Option<i64>,
    pub message: String,
}

impl EventRow {
    /// An event about the whole job.
    pub fn job(at_ms: i64, level: EventLevel, step_count: u32, message: String) -> EventRow {
        EventRow {
            at_ms,
            level,
            step: None,
            step_index: None,
            step_count,
            attempt: None,
            elapsed_ms: None,
            message,
        }
    }

    /// An event of one step.
    pub fn step(
        at_ms: i64,
        level: EventLevel,
        index: u32,
        name: impl Into<String>,
        step_count: u32,
        message: String,
    ) -> EventRow {
        EventRow {
            step: Some(name.into()),
            step_index: Some(index),
            ..EventRow::job(at_ms, level, step_count, message)
        }
    }

    pub fn attempt(mut self, attempt: Option<u32>) -> EventRow {
        self.attempt = attempt;
        self
    }

    pub fn elapsed_ms(mut self, elapsed_ms: Option<i64>) -> EventRow {
        self.elapsed_ms = elapsed_ms;
        self
    }
}

/// Appends an event with the next sequence number of its job. Two plain statements (the
/// number, then the row) rather than one `INSERT … SELECT MAX … RETURNING`: sqlite runs that
/// one through two temporary tables, and it cost 2.5 times as much — events are most of what
/// the writer writes. Atomic all the same: it runs inside a write, and writes are serialized
/// (`Db::write`). A `step_count` of 0 is filled in from the job's steps.
pub fn append_event(conn: &Connection, job_id: JobId, e: &EventRow) -> rusqlite::Result<i64> {
    let seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = ?1")?
        .query_row([job_id], |r| r.get(0))?;
    let step_count: i64 = match e.step_count {
        0 => conn
            .prepare_cached("SELECT count(*) FROM job_steps WHERE job_id = ?1")?
            .query_row([job_id], |r| r.get(0))?,
        n => i64::from(n),
    };
    conn.prepare_cached(
        "INSERT INTO job_events(job_id, seq, at_ms, level, step, step_index, step_count, attempt, elapsed_ms, message) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        job_id,
        seq,
        e.at_ms,
        e.level,
        e.step,
        e.step_index,
        step_count,
        e.attempt,
        e.elapsed_ms,
        e.message
    ])?;
    Ok(seq)
}

pub fn events_after(
    conn: &Connection,
    job_id: JobId,
    after_seq: i64,
    limit: u32,
) -> rusqlite::Result<Vec<JobEvent>> {
    conn.prepare_cached(
        "SELECT job_id, seq, at_ms, level, step, step_index, step_count, attempt, elapsed_ms, message \
         FROM job_events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?
    .query_map(params![job_id, after_seq, limit], |r| {
        Ok(JobEvent {
            job_id: r.get(0)?,
            seq: r.get(1)?,
            at_ms: r.get(2)?,
            level: r.get(3)?,
            step: r.get(4)?,
            step_index: r.get(5)?,
            step_count: r.get(6)?,
            attempt: r.get(7)?,
            elapsed_ms: r.get(8)?,
            message: r.get(9)?,
        })
    })?
    .collect()
}

pub fn job_state(conn: &Connection, job_id: JobId) -> rusqlite::Result<Option<JobState>> {
    conn.prepare_cached("SELECT state FROM jobs WHERE job_id = ?1")?
        .query_row([job_id], |r| r.get(0))
        .optional()
}

/// What ending a job needs to know of it, without its steps.
pub struct JobTiming {
    pub user_id: UserId,
    pub kind: JobKind,
    pub state: JobState,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
}

pub fn job_timing(conn: &Connection, job_id: JobId) -> rusqlite::Result<Option<JobTiming>> {
    conn.prepare_cached(
        "SELECT user_id, kind, state, created_at_ms, started_at_ms FROM jobs WHERE job_id = ?1",
    )?
    .query_row([job_id], |r| {
        Ok(JobTiming {
            user_id: r.get(0)?,
            kind: r.get(1)?,
            state: r.get(2)?,
            created_at_ms: r.get(3)?,
            started_at_ms: r.get(4)?,
        })
    })
    .optional()
}

pub fn set_user_vm_status(
    conn: &Connection,
    user_id: UserId,
    status: VmStatus,
    now_secs: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE users SET vm_status = ?2, updated_at = ?3 WHERE user_id = ?1")?
        .execute(params![user_id, status, now_secs])?;
    Ok(())
}

/// The worker is alive (only while the job runs or cancels: an ended job keeps its last beat).
pub fn heartbeat(conn: &Connection, job_id: JobId, now_ms: i64) -> Result<(), ServiceError> {
    conn.prepare_cached(
        "UPDATE jobs SET heartbeat_at_ms = ?2 WHERE job_id = ?1 AND state IN ('running','cancelling')",
    )?
    .execute(params![job_id, now_ms])?;
    Ok(())
}

/// Renumbers and adds a job's step rows as [`super::resume::plan`] matched them to the current
/// step list. Rows only ever move to a higher index (steps are inserted, never removed), so
/// moving the highest first never collides with a row still in place.
pub fn apply_resume_plan(
    conn: &Connection,
    job_id: JobId,
    plan: &super::resume::ResumePlan,
) -> Result<(), ServiceError> {
    let mut moves = plan.moves.clone();
    moves.sort_by_key(|m| std::cmp::Reverse(m.0));
    for (from, to) in moves {
        if to < from {
            return Err(ServiceError::Internal(format!(
                "resume plan moves step {from} down to {to}"
            )));
        }
        conn.prepare_cached(
            "UPDATE job_steps SET step_index = ?3 WHERE job_id = ?1 AND step_index = ?2",
        )?
        .execute(params![job_id, from, to])?;
    }
    for (index, name) in &plan.added {
        conn.prepare_cached("INSERT INTO job_steps(job_id, step_index, name) VALUES (?1, ?2, ?3)")?
            .execute(params![job_id, index, name])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    #[tokio::test]
    async fn one_active_job_per_user_and_gapless_event_sequence() {
        let db = Db::open_in_memory().unwrap();
        db.write(|conn| -> Result<(), ServiceError> {
            conn.execute(
                "INSERT INTO users(forge_username, email, created_at, updated_at) VALUES ('alice','a@b.c',1,1)",
                [],
            )?;
            let new = |kind| NewJob {
                user_id: 1,
                forge_username: "alice",
                kind,
                backend: "local",
                actor: "test",
                options_json: "{}",
                context_json: "{}",
                steps: &["a", "b"],
                now_ms: 5,
            };
            let first = insert_job(conn, &new(JobKind::Provision))?;
            let (job, internals) = as_inserted(&new(JobKind::Provision), first);
            assert_eq!(job, require_job(conn, first)?, "as inserted = as stored");
            let stored = super::internals(conn, first)?;
            assert_eq!(
                (internals.options_json, internals.context_json, internals.cancel_requested),
                (stored.options_json, stored.context_json, stored.cancel_requested)
            );
            let err = insert_job(conn, &new(JobKind::Decommission)).unwrap_err();
            assert!(err.to_string().contains(&format!("job {first}")), "{err}");
            let job = require_job(conn, first)?;
            assert_eq!(job.state, JobState::Queued);
            assert_eq!(job.steps.len(), 2);
            for i in 0..3 {
                let e = EventRow::job(i, EventLevel::Info, 2, format!("m{i}"));
                assert_eq!(append_event(conn, first, &e)?, i + 1);
            }
            // A step count of 0 is the job's own.
            let unsized_event = EventRow::job(3, EventLevel::Info, 0, "m3".into());
            assert_eq!(append_event(conn, first, &unsized_event)?, 4);
            let events = events_after(conn, first, 1, 10)?;
            assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
            assert_eq!(events.last().map(|e| e.step_count), Some(2));
            assert!(conn.execute("DELETE FROM job_events", []).is_err());
            conn.execute("UPDATE jobs SET state = 'failed' WHERE job_id = ?1", [first])?;
            let second = insert_job(conn, &new(JobKind::Decommission))?;
            // Numbered per job.
            assert_eq!(append_event(conn, second, &unsized_event)?, 1);
            Ok(())
        })
        .await
        .unwrap();
    }
}
