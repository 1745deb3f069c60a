-- 001-init.sql: the first schema of momentd.
-- Applied once by engine/store.c when PRAGMA user_version < 1, inside one transaction.
-- Times are Unix milliseconds (UTC). Sizes are bytes.

-- Which model produced a stored vector: segments of different models are never mixed.
CREATE TABLE models (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,            -- e.g. 'clip+temporal'
    weights_sha256  TEXT NOT NULL,            -- hash over the weight files
    preprocess_hash TEXT NOT NULL,            -- hash of sampling/preprocessing settings
    dim             INTEGER NOT NULL CHECK (dim > 0),
    config          TEXT,                     -- JSON, for humans
    created_at      INTEGER NOT NULL,
    UNIQUE (weights_sha256, preprocess_hash)
);

CREATE TABLE videos (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    name        TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('upload', 'path')),
    path        TEXT NOT NULL,                -- stored file (upload) or the archive file (path)
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at  INTEGER NOT NULL,
    -- Filled by the indexing job:
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
    indexed_at  INTEGER
);

CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY,
    video_id       INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL DEFAULT 'index',
    state          TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    progress_done  INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    progress_unit  TEXT NOT NULL DEFAULT 'bytes',
    error          TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,  -- times a worker started it
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,                     -- start of the current attempt
    finished_at    INTEGER,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_video ON jobs (video_id, id);

-- One row per stored segment embedding (filled from issue 5 on).
CREATE TABLE segments (
    id        INTEGER PRIMARY KEY,
    video_id  INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    model_id  INTEGER NOT NULL REFERENCES models(id),
    seq       INTEGER NOT NULL,
    start_ms  INTEGER NOT NULL,
    end_ms    INTEGER NOT NULL CHECK (end_ms >= start_ms),
    embedding BLOB NOT NULL,                    -- fp16, little-endian, models.dim values
    UNIQUE (video_id, model_id, seq)
);
CREATE INDEX segments_by_model ON segments (model_id, video_id);
