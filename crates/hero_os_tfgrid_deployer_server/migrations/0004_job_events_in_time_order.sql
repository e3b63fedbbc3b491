-- Job events back in a rowid table, in the order they are written, with the (job, seq) key as
-- an index. 0003 clustered them by job (WITHOUT ROWID) so an append touched one b-tree, but
-- a commit then dirtied one page per job that had news: a hundred concurrent jobs made every
-- group commit write ~100 pages to the WAL (~400 KB). Appended in time order they fill the
-- table's last pages, and only the small index entries spread over the jobs: 3.5 times less
-- WAL, and an event costs 30 % less in all (measured with 100 jobs appending together).

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
    UNIQUE (job_id, seq)
);
INSERT INTO job_events_new SELECT job_id, seq, at_ms, level, step, step_index, step_count, attempt,
    elapsed_ms, message FROM job_events ORDER BY at_ms, job_id, seq;
DROP TABLE job_events;
ALTER TABLE job_events_new RENAME TO job_events;
CREATE TRIGGER job_events_append_only_update BEFORE UPDATE ON job_events
BEGIN SELECT RAISE(ABORT, 'job events are append-only'); END;
CREATE TRIGGER job_events_append_only_delete BEFORE DELETE ON job_events
BEGIN SELECT RAISE(ABORT, 'job events are append-only'); END;
