//! The append-only audit log. Every state change records who did what to what, and how it ended;
//! details are human-readable and never contain a secret.

use hero_os_tfgrid_deployer_sdk::types::{AuditEvent, EventsPage, ListEventsParams};
use rusqlite::{params, Connection};

/// Who is acting: the Forge username injected by the SSO edge, or the local operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    pub fn local(name: &str) -> Actor {
        Actor(format!("local:{name}"))
    }

    pub fn system() -> Actor {
        Actor("system".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One event to append.
pub struct Entry<'a> {
    pub actor: &'a Actor,
    pub action: &'a str,
    pub subject: &'a str,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

/// An [`Entry`] that owns its text: for a line that waits to be written inside a later write
/// (with a job's end, or on the writer thread).
#[derive(Debug)]
pub struct OwnedEntry {
    pub actor: Actor,
    pub action: String,
    pub subject: String,
    pub outcome: String,
    pub detail: Option<String>,
}

impl OwnedEntry {
    pub fn append(&self, conn: &Connection, at: i64) -> rusqlite::Result<i64> {
        append(
            conn,
            at,
            Entry {
                actor: &self.actor,
                action: &self.action,
                subject: &self.subject,
                outcome: &self.outcome,
                detail: self.detail.as_deref(),
            },
        )
    }
}

pub fn append(conn: &Connection, at: i64, e: Entry<'_>) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO events(at, actor, action, subject, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![at, e.actor.as_str(), e.action, e.subject, e.outcome, e.detail])?;
    Ok(conn.last_insert_rowid())
}

/// Newest first, filtered by prefix on subject/action, exact actor and exact user.
pub fn list(conn: &Connection, p: &ListEventsParams) -> rusqlite::Result<EventsPage> {
    let limit = i64::from(p.limit.unwrap_or(100).clamp(1, 500));
    let mut sql = String::from(
        "SELECT event_id, at, actor, action, subject, outcome, detail FROM events WHERE event_id < ?1",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![p.before.unwrap_or(i64::MAX).into()];
    if let Some(actor) = &p.actor {
        args.push(actor.clone().into());
        sql.push_str(&format!(" AND actor = ?{}", args.len()));
    }
    if let Some(user) = &p.user {
        args.push(format!("user:{user}").into());
        sql.push_str(&format!(" AND subject = ?{}", args.len()));
    }
    for (column, prefix) in [("subject", &p.subject), ("action", &p.action)] {
        if let Some(prefix) = prefix {
            args.push(prefix.clone().into());
            let n = args.len();
            sql.push_str(&format!(" AND substr({column}, 1, length(?{n})) = ?{n}"));
        }
    }
    args.push(rusqlite::types::Value::Integer(limit + 1));
    sql.push_str(&format!(" ORDER BY event_id DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut events = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok(AuditEvent {
                event_id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                outcome: r.get(5)?,
                detail: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_before = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(|e| e.event_id)
    } else {
        None
    };
    Ok(EventsPage {
        events,
        next_before,
    })
}
