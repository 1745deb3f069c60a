-- 002-temporal.sql: the temporal encoder's resumable state and per-video token accounting.

-- The temporal stream's checkpoint after the last committed window (engine/temporal.h layout);
-- stored in the same transaction as that window's segments, so a restart resumes exactly there.
ALTER TABLE jobs ADD COLUMN checkpoint BLOB;

-- Token reduction of the last indexing run: what was sampled versus what is stored.
ALTER TABLE videos ADD COLUMN n_frames INTEGER;          -- sampled frames
ALTER TABLE videos ADD COLUMN n_segments INTEGER;        -- stored segment embeddings
ALTER TABLE videos ADD COLUMN tokens_per_frame INTEGER;  -- CLIP tokens per frame (1 + patches)
ALTER TABLE videos ADD COLUMN embed_dim INTEGER;         -- width of tokens and segment embeddings
ALTER TABLE videos ADD COLUMN temporal TEXT;             -- which temporal encoder produced the segments

-- Provenance of the temporal encoder beside the CLIP weights.
ALTER TABLE models ADD COLUMN temporal_sha256 TEXT;
