-- Where `co2-bridge import --from-mysql` got to in a legacy table, written
-- in the transaction that stores the rows it read (so a run cut anywhere
-- goes on after the last committed key: nothing skipped; what a rerun
-- reads again is a no-op under the tables' unique keys).
CREATE TABLE IF NOT EXISTS import_progress (
    -- The source: server, database, table (and device), never a password.
    source VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL PRIMARY KEY,
    -- The last key committed, as text (an id, or a date_time).
    last_key VARCHAR(64) CHARACTER SET ascii NOT NULL,
    -- Rows of the source read up to it, for the progress line.
    rows_read BIGINT UNSIGNED NOT NULL DEFAULT 0,
    updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
