-- 004-file-identity.sql: which file a video is, so a job reads the file that was hashed.
-- (dev, inode, size, mtime) of the file when it was added; a job checks them on the descriptor
-- it actually reads (engine/files.c) and refuses a file that was replaced or changed since, e.g.
-- swapped for a symlink to somewhere else. NULL for videos added before this migration.
ALTER TABLE videos ADD COLUMN file_dev INTEGER;
ALTER TABLE videos ADD COLUMN file_ino INTEGER;
ALTER TABLE videos ADD COLUMN file_mtime_ns INTEGER;

-- What the last indexing run covered: 1 when the file ended early (cut or damaged), and the
-- duration that was actually decoded and indexed.
ALTER TABLE videos ADD COLUMN truncated INTEGER;
ALTER TABLE videos ADD COLUMN indexed_ms INTEGER;
