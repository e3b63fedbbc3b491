//! Live job progress: `GET /jobs/{id}/events?after=SEQ` as server-sent events, backed by the
//! SDK's `job_events` long-poll. Replays everything after `after` (or `Last-Event-ID`), then
//! follows until the job is final.
//!
//! Events: `progress` (one per job event, id = seq, data = the event JSON), `job` (the job with its
//! steps, after each batch), `done` (the job is final and every event was sent), `failure` (the
//! server could not be asked; data = the reason).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::Stream;
use hero_os_tfgrid_deployer_sdk::jobs::{JobEventsParams, JobIdParams};
use hero_os_tfgrid_deployer_sdk::{methods, Client};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Admin;
use crate::error::PageResult;

/// Longest single long-poll; short enough to notice a closed browser soon.
const WAIT_MS: u32 = 15_000;

/// How long one stream lives before it ends and the browser's EventSource reconnects (resuming with
/// `Last-Event-ID`). Why: admission is checked per request, and a stream is one request — without an end, an
/// admin taken off the allowlist (or whose five-minute signed identity ran out) kept watching a stuck job for as
/// long as it stayed stuck. Each reconnect passes the admission check again.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    pub after: Option<i64>,
}

pub async fn job_events(
    Extension(admin): Extension<Admin>,
    Path(job_id): Path<i64>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> PageResult<Response> {
    // Fail fast (404) for an unknown job, before committing to a stream.
    admin
        .client
        .call::<methods::GetJob>(&JobIdParams { job_id })
        .await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let after = resume.or(q.after).unwrap_or(0).max(0);
    let stream = follow(admin.client.clone(), job_id, after, STREAM_LIFETIME);
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// The event stream of one job. Ends when the job is final, the browser goes away, the server errs, or
/// `lifetime` has passed (the browser's EventSource then reconnects with `Last-Event-ID`).
pub fn follow(
    client: Client,
    job_id: i64,
    mut after: i64,
    lifetime: Duration,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let ends = tokio::time::Instant::now() + lifetime;
    tokio::spawn(async move {
        loop {
            let left = ends.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let wait_ms = u32::try_from(left.as_millis())
                .unwrap_or(u32::MAX)
                .min(WAIT_MS);
            let page = match client
                .call::<methods::JobEvents>(&JobEventsParams {
                    job_id,
                    after_seq: after,
                    wait_ms,
                    limit: Some(500),
                })
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    let ev = Event::default().event("failure").data(e.to_string());
                    let _ = tx.send(Ok(ev)).await;
                    return;
                }
            };
            let had_events = !page.events.is_empty();
            for ev in &page.events {
                let data = serde_json::to_string(ev).unwrap_or_default();
                let sse = Event::default()
                    .event("progress")
                    .id(ev.seq.to_string())
                    .data(data);
                if tx.send(Ok(sse)).await.is_err() {
                    return;
                }
            }
            after = page.last_seq.max(after);
            if had_events || page.done {
                if let Ok(job) = client
                    .call::<methods::GetJob>(&JobIdParams { job_id })
                    .await
                {
                    let data = serde_json::to_string(&job).unwrap_or_default();
                    if tx
                        .send(Ok(Event::default().event("job").data(data)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            if page.done {
                let _ = tx
                    .send(Ok(Event::default().event("done").data(after.to_string())))
                    .await;
                return;
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
