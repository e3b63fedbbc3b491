-- Provisioning jobs (issue 3). A job row is written before anything runs, so a crash at any
-- instant leaves a record the next start resumes. Nothing secret is stored here.

CREATE TABLE jobs (
    job_id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id          INTEGER NOT NULL,
    forge_username   TEXT    NOT NULL,
    -- 'provision' | 'decommission'
    kind             TEXT    NOT NULL,
    -- 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelling' | 'cancelled'
    state            TEXT    NOT NULL,
    backend          TEXT    NOT NULL,
    actor            TEXT    NOT NULL,
    -- ProvisionOptions as JSON.
    options_json     TEXT    NOT NULL DEFAULT '{}',
    -- What earlier steps found or made (node, VM facts, gateway, host key pin), so a resumed or
    -- retried step adopts instead of redoing. Never secrets.
    context_json     TEXT    NOT NULL DEFAULT '{}',
    current_step     TEXT,
    error            TEXT,
    -- Set by cancel_job; the worker notices and cleans up.
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result_json      TEXT,
    created_at_ms    INTEGER NOT NULL,
    started_at_ms    INTEGER,
    finished_at_ms   INTEGER,
    heartbeat_at_ms  INTEGER
);
CREATE INDEX jobs_by_user ON jobs(user_id, job_id);
CREATE INDEX jobs_by_state ON jobs(state, job_id);
-- At most one active job per user, enforced by sqlite itself (no check-then-insert race).
CREATE UNIQUE INDEX jobs_one_active_per_user ON jobs(user_id)
    WHERE state IN ('queued', 'running', 'cancelling');

CREATE TABLE job_steps (
    job_id         INTEGER NOT NULL REFERENCES jobs(job_id),
    step_index     INTEGER NOT NULL,
    name           TEXT    NOT NULL,
    -- 'pending' | 'running' | 'done' | 'failed' | 'skipped'
    state          TEXT    NOT NULL DEFAULT 'pending',
    attempts       INTEGER NOT NULL DEFAULT 0,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER,
    duration_ms    INTEGER,
    message        TEXT,
    PRIMARY KEY (job_id, step_index)
);

-- Append-only, replayable progress of every job.
CREATE TABLE job_events (
    job_id     INTEGER NOT NULL REFERENCES jobs(job_id),
    seq        INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    -- 'info' | 'warn' | 'error' | 'output'
    level      TEXT    NOT NULL,
    step       TEXT,
    step_index INTEGER,
    step_count INTEGER NOT NULL,
    attempt    INTEGER,
    elapsed_ms INTEGER,
    message    TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TRIGGER job_events_append_only_update BEFORE UPDATE ON job_events
BEGIN SELECT RAISE(ABORT, 'job events are append-only'); END;
CREATE TRIGGER job_events_append_only_delete BEFORE DELETE ON job_events
BEGIN SELECT RAISE(ABORT, 'job events are append-only'); END;

-- Facts finalize records on the VM row, beyond 0001's columns.
ALTER TABLE vms ADD COLUMN job_id INTEGER;
ALTER TABLE vms ADD COLUMN backend_id TEXT;
ALTER TABLE vms ADD COLUMN ssh_key_fingerprint TEXT;
ALTER TABLE vms ADD COLUMN ready_at INTEGER;
