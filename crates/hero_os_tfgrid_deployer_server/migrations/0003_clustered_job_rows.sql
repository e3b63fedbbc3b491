-- Job steps and events are only ever reached by their primary key (job, index) / (job, seq):
-- store them clustered on it (WITHOUT ROWID), so writing one touches one b-tree instead of a
-- table and an index. Every provisioning step writes two events and two step updates.

CREATE TABLE job_steps_new (
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
) WITHOUT ROWID;
INSERT INTO job_steps_new SELECT job_id, step_index, name, state, attempts, started_at_ms,
    finished_at_ms, duration_ms, message FROM job_steps;
DROP TABLE job_steps;
ALTER TABLE job_steps_new RENAME TO job_steps;

-- Append-only, replayable progress of every job.
CREATE TABLE job_events_new (
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
) WITHOUT ROWID;
INSERT INTO job_events_new SELECT job_id, seq, at_ms, level, step, step_index, step_count, attempt,
    elapsed_ms, message FROM job_events;
DROP TABLE job_events;
ALTER TABLE job_events_new RENAME TO job_events;
CREATE TRIGGER job_events_append_only_update BEFORE UPDATE ON job_events
BEGIN SELECT RAISE(ABORT, 'job events are append-only'); END;
CREATE TRIGGER job_events_append_only_delete BEFORE DELETE ON job_events
BEGIN SELECT RAISE(ABORT, 'job events are append-only'); END;
