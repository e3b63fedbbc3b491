//! A job's timeline: steps with state, attempts and durations, and its event log. Rendered on the
//! server (replayable after the job ended) and updated live by `app.js` over `/jobs/{id}/events`.

use hero_os_tfgrid_deployer_sdk::jobs::{Job, JobEvent, JobState, StepState};
use maud::{html, Markup};

use crate::layout::{job_badge, job_state_str, step_state_str};
use crate::pages::users::kind_label;
use crate::time;

pub fn render(job: &Job, events: &[JobEvent], last_seq: i64) -> Markup {
    let total = job.steps.len();
    let done = job
        .steps
        .iter()
        .filter(|s| matches!(s.state, StepState::Done | StepState::Skipped))
        .count();
    let live = job.state.is_active();
    let elapsed = match (job.started_at_ms, job.finished_at_ms) {
        (Some(s), Some(f)) => Some(f - s),
        _ => None,
    };
    html! {
        section.card data-testid="timeline" data-live-job=[live.then_some(job.job_id)] data-after-seq=(last_seq) {
            div.page-head {
                div {
                    h2 {
                        a href=(format!("/jobs/{}", job.job_id)) { (kind_label(job.kind)) " job #" (job.job_id) }
                        " "
                        span data-job-badge="" { (job_badge(job.state)) }
                    }
                    p.muted {
                        "Started by " strong { (job.actor) } " · backend " code { (job.backend) }
                        " · created " (time::utc_ms(job.created_at_ms)) " UTC"
                        @if let Some(e) = elapsed { " · took " (time::duration_ms(e)) }
                    }
                }
                @if live { span #live-status .live aria-live="polite" { "live updates need JavaScript; reload to refresh" } }
            }
            @if let Some(err) = &job.error {
                div class=(if job.state == JobState::Cancelled { "notice warn" } else { "notice bad" })
                    role="alert" data-testid="job-error" {
                    strong { @if job.state == JobState::Cancelled { "Cancelled" } @else { "Failed" }
                        @if let Some(s) = &job.current_step { " at step " code { (s) } } }
                    div { (err) }
                }
            }
            @if let Some(r) = &job.result {
                div.notice.ok role="status" {
                    strong { "Ready" }
                    div { a href=(r.url) target="_blank" rel="noopener noreferrer" data-testid="vm-url" { (r.url) } }
                }
            }
            progress.bar max=(total.max(1)) value=(done) aria-label="Job progress" {}
            p.muted data-progress-text="" { (done) " of " (total) " steps" }
            ol.steps aria-label="Steps" {
                @for s in &job.steps {
                    li data-step=(s.index) data-name=(s.name) data-state=(step_state_str(s.state)) {
                        span.dot aria-hidden="true" { (s.index) }
                        div {
                            span.name { (s.name) } " "
                            span.state.muted { (step_state_str(s.state)) }
                            @if let Some(m) = &s.message { div.msg { (m) } } @else { div.msg {} }
                        }
                        div.timing {
                            // A running step carries its start, and app.js ticks its elapsed time.
                            span.dur data-started-at-ms=[(s.state == StepState::Running).then_some(s.started_at_ms).flatten()] {
                                @if let Some(d) = s.duration_ms { (time::duration_ms(d)) }
                                @else if let (StepState::Running, Some(t)) = (s.state, s.started_at_ms) {
                                    (time::duration_ms((now_ms() - t).max(0)))
                                }
                            }
                            br;
                            span.att { @if s.attempts > 0 { "attempt " (s.attempts) } }
                        }
                    }
                }
            }
            details open[live || job.state == JobState::Failed] {
                summary { "Event log (" span data-log-count="" { (events.len()) } ")" }
                ol #job-log .log aria-live="off" {
                    @if events.is_empty() { li.log-empty { "No events yet." } }
                    @for e in events {
                        li data-level=(level(e)) data-seq=(e.seq) {
                            time { (time::utc_ms(e.at_ms)) } (e.message)
                        }
                    }
                }
            }
            span hidden data-final-state=(job_state_str(job.state)) {}
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn level(e: &JobEvent) -> &'static str {
    use hero_os_tfgrid_deployer_sdk::jobs::EventLevel;
    match e.level {
        EventLevel::Info => "info",
        EventLevel::Warn => "warn",
        EventLevel::Error => "error",
        EventLevel::Output => "output",
    }
}
