//! Job events: persisted, numbered per job without gaps, replayable, and followed live with a
//! long-poll (`deployer.job_events`) that wakes as soon as an event is appended.

use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::jobs::*;

use super::store::{self, EventRow};
use super::Provisioner;
use crate::error::ServiceError;

/// An event before it gets its number and time.
#[derive(Debug, Clone)]
pub struct Draft {
    pub level: EventLevel,
    pub step: Option<(u32, String)>,
    pub attempt: Option<u32>,
    pub elapsed_ms: Option<i64>,
    pub message: String,
}

impl Draft {
    pub fn info(message: impl Into<String>) -> Draft {
        Draft {
            level: EventLevel::Info,
            step: None,
            attempt: None,
            elapsed_ms: None,
            message: message.into(),
        }
    }

    pub fn level(mut self, level: EventLevel) -> Draft {
        self.level = level;
        self
    }

    pub fn step(mut self, index: u32, name: &str) -> Draft {
        self.step = Some((index, name.to_owned()));
        self
    }

    pub fn attempt(mut self, attempt: u32) -> Draft {
        self.attempt = Some(attempt);
        self
    }

    pub fn elapsed(mut self, elapsed: Duration) -> Draft {
        self.elapsed_ms = Some(elapsed.as_millis() as i64);
        self
    }
}

/// `37 s`, `1.2 s`, `250 ms`: durations as people read them in event messages.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Longest long-poll wait.
pub const MAX_WAIT_MS: u32 = 30_000;

impl Provisioner {
    /// Persists one event of `job_id` and wakes followers.
    pub async fn event(&self, job_id: JobId, draft: Draft) -> Result<i64, ServiceError> {
        self.queue_events(job_id, vec![draft]).await
    }

    /// Persists events of `job_id` in order, in one write queued now; the returned future
    /// reports the last one's number once committed, and wakes followers then.
    pub fn queue_events(
        &self,
        job_id: JobId,
        drafts: Vec<Draft>,
    ) -> impl std::future::Future<Output = Result<i64, ServiceError>> + Send + 'static {
        let at_ms = self.now_ms();
        let rows: Vec<EventRow> = drafts
            .into_iter()
            .map(|draft| EventRow {
                at_ms,
                level: draft.level,
                step_index: draft.step.as_ref().map(|(i, _)| *i),
                step: draft.step.map(|(_, n)| n),
                step_count: 0,
                attempt: draft.attempt,
                elapsed_ms: draft.elapsed_ms,
                message: draft.message,
            })
            .collect();
        for row in rows.iter().filter(|r| r.level != EventLevel::Output) {
            tracing::info!(
                job_id,
                step = row.step.as_deref().unwrap_or("-"),
                "{}",
                row.message
            );
        }
        let written = self.db().write(move |conn| -> Result<i64, ServiceError> {
            let mut last = 0;
            for row in &rows {
                last = store::append_event(conn, job_id, row)?;
            }
            Ok(last)
        });
        let me = self.clone();
        async move {
            let seq = written.await?;
            me.bump(job_id);
            Ok(seq)
        }
    }

    /// `deployer.job_events`: events after `after_seq`; waits up to `wait_ms` when there are none
    /// yet and the job is still active. Works the same after the job ended (pure replay).
    pub async fn job_events(&self, p: JobEventsParams) -> Result<JobEventsPage, ServiceError> {
        let limit = p.limit.unwrap_or(500);
        if !(1..=1000).contains(&limit) {
            return Err(ServiceError::InvalidParams(format!(
                "limit must be between 1 and 1000, got {limit}"
            )));
        }
        if p.wait_ms > MAX_WAIT_MS {
            return Err(ServiceError::InvalidParams(format!(
                "wait_ms must be at most {MAX_WAIT_MS}, got {}",
                p.wait_ms
            )));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(p.wait_ms));
        loop {
            // Subscribed before reading: an event appended after the read still wakes us.
            // Re-subscribed every round: the channel of an ended job is dropped.
            let mut rx = self.bus(p.job_id).subscribe();
            rx.borrow_and_update();
            let job_id = p.job_id;
            let after = p.after_seq;
            let read = self
                .db()
                .call(
                    move |conn| -> Result<(Vec<JobEvent>, JobState), ServiceError> {
                        let state = store::job_state(conn, job_id)?.ok_or_else(|| {
                            ServiceError::NotFound(format!("no job with job_id {job_id}"))
                        })?;
                        Ok((store::events_after(conn, job_id, after, limit)?, state))
                    },
                )
                .await;
            let (events, state) = match read {
                Ok(read) => read,
                Err(e) => {
                    drop(rx);
                    self.forget_unwatched_bus(job_id);
                    return Err(e);
                }
            };
            let full_page = events.len() as u32 >= limit;
            if !state.is_active() {
                // Ended: nothing will wake this job's channel again.
                self.forget_bus(job_id);
            }
            if !events.is_empty() || !state.is_active() {
                let last_seq = events.last().map(|e| e.seq).unwrap_or(p.after_seq);
                return Ok(JobEventsPage {
                    done: !state.is_active() && !full_page,
                    events,
                    last_seq,
                    job_state: state,
                });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(JobEventsPage {
                    events,
                    last_seq: p.after_seq,
                    job_state: state,
                    done: false,
                });
            }
            let _ = tokio::time::timeout(deadline - now, rx.changed()).await;
        }
    }
}
