-- 005-cancelled.sql: jobs can be cancelled (POST /v1/jobs/{id}/cancel). SQLite cannot change a
-- CHECK constraint, so jobs is rebuilt once more (as in 003). Its AUTOINCREMENT high-water mark
-- is carried over explicitly: the new table would otherwise start from the highest id left, and
-- the id of a deleted newest job would be handed out again.
CREATE TEMP TABLE jobs_seq AS SELECT coalesce(max(seq), 0) AS seq FROM sqlite_sequence WHERE name = 'jobs';

CREATE TABLE jobs_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id       INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL DEFAULT 'index',
    state          TEXT NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    progress_done  INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    progress_unit  TEXT NOT NULL DEFAULT 'frames',
    error          TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    updated_at     INTEGER NOT NULL,
    checkpoint     BLOB
);
INSERT INTO jobs_new (id, video_id, kind, state, progress_done, progress_total, progress_unit, error, attempts,
                      created_at, started_at, finished_at, updated_at, checkpoint)
    SELECT id, video_id, kind, state, progress_done, progress_total, progress_unit, error, attempts, created_at,
           started_at, finished_at, updated_at, checkpoint
    FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_video ON jobs (video_id, id);
-- The rename keeps jobs_new's sequence row (now named jobs); raise it to the old mark.
INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobs');
UPDATE sqlite_sequence SET seq = max(seq, (SELECT seq FROM temp.jobs_seq)) WHERE name = 'jobs';
DROP TABLE temp.jobs_seq;
