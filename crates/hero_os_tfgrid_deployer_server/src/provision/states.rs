//! The states of jobs, steps and VM rows, and the one place that says which moves between them
//! are legal. The enums are stored as text (`ToSql`/`FromSql`, see the SDK's `sql` module), and
//! reading an unknown value is an error naming it: a row from a newer deployer must not read as
//! `failed` or `provision`.
//!
//! Every change of a job's state goes through [`move_job`]; a move the table does not allow is
//! not made, and the caller learns the state that stopped it (a cancel that won the race, a job
//! the reaper already ended).

use hero_os_tfgrid_deployer_sdk::jobs::{JobId, JobState, StepState};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::Cached;
use crate::error::ServiceError;

/// Whether a job may go from `from` to `to`.
///
/// * `queued → running` when it gets a slot; `running → running` when a restarted server resumes
///   it; `queued | running | cancelling → cancelling` when a cancel is carried out;
/// * any active state ends in `succeeded`, `failed` or `cancelled` (a cancelled job that could not
///   clean up ends `failed`, with the reason);
/// * `failed → queued` on `retry_job`; `succeeded` and `cancelled` are final.
pub fn job_move_is_legal(from: JobState, to: JobState) -> bool {
    use JobState::*;
    matches!(
        (from, to),
        (Queued | Running, Running)
            | (Queued | Running | Cancelling, Cancelling)
            | (
                Queued | Running | Cancelling,
                Succeeded | Failed | Cancelled
            )
            | (Failed, Queued)
    )
}

/// Whether a step may go from `from` to `to`: `pending → running` when it starts, `running →
/// running` for another attempt or a resumed run, `running → done | failed` when it ends,
/// `failed | running → pending` when its job is retried. `done` and `skipped` stay.
pub fn step_move_is_legal(from: StepState, to: StepState) -> bool {
    use StepState::*;
    matches!(
        (from, to),
        (Pending | Running, Running)
            | (Running, Done | Failed)
            | (Failed | Running, Pending)
            | (Pending, Failed)
    )
}

/// The outcome of [`move_job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// The job moved; it was in this state.
    From(JobState),
    /// The move is not legal from the job's current state (given); nothing was written.
    Refused(JobState),
}

/// Moves the job to `to` if [`job_move_is_legal`] from its current state, inside the caller's
/// write (so the read and the update see the same row).
pub fn move_job(conn: &Connection, job_id: JobId, to: JobState) -> Result<Moved, ServiceError> {
    let from: JobState = conn
        .prepare_cached("SELECT state FROM jobs WHERE job_id = ?1")?
        .query_row([job_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| ServiceError::NotFound(format!("no job with job_id {job_id}")))?;
    if !job_move_is_legal(from, to) {
        tracing::debug!(
            job_id,
            from = from.as_str(),
            to = to.as_str(),
            "job move refused"
        );
        return Ok(Moved::Refused(from));
    }
    conn.execute_cached(
        "UPDATE jobs SET state = ?2 WHERE job_id = ?1",
        params![job_id, to],
    )?;
    Ok(Moved::From(from))
}

/// The states of a step `to` may be entered from, for a guarded `UPDATE … WHERE state IN`.
pub fn step_sources(to: StepState) -> Vec<StepState> {
    StepState::ALL
        .iter()
        .copied()
        .filter(|from| step_move_is_legal(*from, to))
        .collect()
}

/// Moves step `index` of the job to `to` if legal, with the extra `SET` clauses and their
/// parameters (numbered from `?4`). Returns whether it moved.
pub fn move_step(
    conn: &Connection,
    job_id: JobId,
    index: u32,
    to: StepState,
    set: &str,
    extra: &[&dyn ToSql],
) -> Result<bool, ServiceError> {
    let from: Option<StepState> = conn
        .prepare_cached("SELECT state FROM job_steps WHERE job_id = ?1 AND step_index = ?2")?
        .query_row(params![job_id, index], |r| r.get(0))
        .optional()?;
    let Some(from) = from else {
        return Ok(false);
    };
    if !step_move_is_legal(from, to) {
        return Ok(false);
    }
    let sql = if set.is_empty() {
        "UPDATE job_steps SET state = ?3 WHERE job_id = ?1 AND step_index = ?2".to_owned()
    } else {
        format!("UPDATE job_steps SET state = ?3, {set} WHERE job_id = ?1 AND step_index = ?2")
    };
    let mut args: Vec<&dyn ToSql> = vec![&job_id, &index, &to];
    args.extend_from_slice(extra);
    conn.prepare_cached(&sql)?.execute(args.as_slice())?;
    Ok(true)
}

/// The state of a VM row. Rows are never deleted, only marked `decommissioned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Recorded before the backend is asked (persist, then act); a job is making it.
    Deploying,
    /// Verified and handed out.
    Ready,
    /// The last job that tried to make it failed; `retry_job` or a new provision adopts it,
    /// decommission removes it.
    Failed,
    /// A decommission job is removing it.
    Decommissioning,
    Decommissioned,
}

impl VmState {
    pub const ALL: &'static [VmState] = &[
        VmState::Deploying,
        VmState::Ready,
        VmState::Failed,
        VmState::Decommissioning,
        VmState::Decommissioned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Deploying => "deploying",
            VmState::Ready => "ready",
            VmState::Failed => "failed",
            VmState::Decommissioning => "decommissioning",
            VmState::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(s: &str) -> Option<VmState> {
        VmState::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

impl ToSql for VmState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for VmState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        VmState::parse(text).ok_or_else(|| {
            FromSqlError::Other(format!("unknown VM state {text:?} in the database").into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use hero_os_tfgrid_deployer_sdk::jobs::{EventLevel, JobKind};
    use hero_os_tfgrid_deployer_sdk::types::VmStatus;

    #[test]
    fn final_states_are_final_and_only_failed_jobs_are_requeued() {
        for to in JobState::ALL {
            assert!(!job_move_is_legal(JobState::Succeeded, *to));
            assert!(!job_move_is_legal(JobState::Cancelled, *to));
            assert_eq!(
                job_move_is_legal(JobState::Failed, *to),
                *to == JobState::Queued
            );
        }
        assert!(!job_move_is_legal(JobState::Cancelling, JobState::Running));
        assert!(!step_move_is_legal(StepState::Done, StepState::Running));
    }

    #[tokio::test]
    async fn unknown_stored_values_are_errors_not_defaults() {
        let db = Db::open_in_memory().unwrap();
        db.write(|conn| -> Result<(), ServiceError> {
            for (sql, what) in [
                ("SELECT 'exploded'", "JobState"),
                ("SELECT 'provison'", "JobKind"),
                ("SELECT 'half_done'", "StepState"),
                ("SELECT 'debug'", "EventLevel"),
                ("SELECT 'busy'", "VmStatus"),
                ("SELECT 'deploing'", "VM state"),
            ] {
                let err = match what {
                    "JobState" => conn
                        .query_row(sql, [], |r| r.get::<_, JobState>(0))
                        .map(|_| ()),
                    "JobKind" => conn
                        .query_row(sql, [], |r| r.get::<_, JobKind>(0))
                        .map(|_| ()),
                    "StepState" => conn
                        .query_row(sql, [], |r| r.get::<_, StepState>(0))
                        .map(|_| ()),
                    "EventLevel" => conn
                        .query_row(sql, [], |r| r.get::<_, EventLevel>(0))
                        .map(|_| ()),
                    "VmStatus" => conn
                        .query_row(sql, [], |r| r.get::<_, VmStatus>(0))
                        .map(|_| ()),
                    _ => conn
                        .query_row(sql, [], |r| r.get::<_, VmState>(0))
                        .map(|_| ()),
                }
                .unwrap_err();
                assert!(err.to_string().contains(what), "{what}: {err}");
            }
            // Every known value reads back as itself.
            for s in JobState::ALL {
                assert_eq!(
                    conn.query_row("SELECT ?1", [s], |r| r.get::<_, JobState>(0))?,
                    *s
                );
            }
            for s in VmState::ALL {
                assert_eq!(
                    conn.query_row("SELECT ?1", [s], |r| r.get::<_, VmState>(0))?,
                    *s
                );
            }
            Ok(())
        })
        .await
        .unwrap();
    }
}
