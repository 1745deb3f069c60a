-- 003-ids.sql: ids are never reused. Videos and jobs get AUTOINCREMENT keys, so the id of a
-- deleted video or job is never handed out again (a saved link or job id can never point at
-- other content). SQLite cannot add AUTOINCREMENT to a table, so both are rebuilt with the
-- documented procedure (new table, copy, drop, rename; engine/store_sqlite.c runs migrations
-- with foreign keys off and checks them before committing). Ids deleted before this migration
-- above the highest one left may be used once more; none after.

CREATE TABLE videos_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256      TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    name        TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('upload', 'path')),
    path        TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at  INTEGER NOT NULL,
    duration_ms INTEGER,
    width       INTEGER,
    height      INTEGER,
    fps         REAL,
    rotation    INTEGER,
    codec       TEXT,
    format      TEXT,
    n_streams   INTEGER,
    n_packets   INTEGER,
    n_corrupt   INTEGER,
    indexed_at  INTEGER,
    n_frames         INTEGER,
    n_segments       INTEGER,
    tokens_per_frame INTEGER,
    embed_dim        INTEGER,
    temporal         TEXT
);
INSERT INTO videos_new (id, sha256, name, source, path, size_bytes, created_at, duration_ms, width, height, fps,
                        rotation, codec, format, n_streams, n_packets, n_corrupt, indexed_at, n_frames, n_segments,
                        tokens_per_frame, embed_dim, temporal)
    SELECT id, sha256, name, source, path, size_bytes, created_at, duration_ms, width, height, fps, rotation, codec,
           format, n_streams, n_packets, n_corrupt, indexed_at, n_frames, n_segments, tokens_per_frame, embed_dim,
           temporal
    FROM videos;
DROP TABLE videos;
ALTER TABLE videos_new RENAME TO videos;

CREATE TABLE jobs_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id       INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL DEFAULT 'index',
    state          TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    progress_done  INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    progress_unit  TEXT NOT NULL DEFAULT 'bytes',
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
