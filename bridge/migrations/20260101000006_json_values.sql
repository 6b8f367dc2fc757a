-- JSON as devices send it (issue 13): the long `readings` table keeps every
-- value, not only numbers, and the tags of a topic's named levels; the new
-- `documents` table keeps whole JSON objects.
--
-- readings, adopted in place (its rows are numbers without tags, which is
-- what the defaults say, so no row changes and none can conflict):
--   value       DOUBLE NULL       a number, or a boolean as 0/1; NULL for text
--   text_value  TEXT NULL         a string that is not a number
--   kind        VARCHAR(8)        'number', 'bool' or 'text' (default 'number')
--   tags        JSON NULL         the named topic levels, e.g. {"room": "hall"}
--   tags_key    VARBINARY(32)     '' without tags, else the SHA-256 of `tags`
--                                 (written by the bridge; a JSON column cannot
--                                 be part of a key)
--   field       binary, NO PAD    so `Temp`, `temp` and `temp ` are three fields
--   time        DATETIME(6)       microseconds: a message without its own time is
--                                 stamped when received, a device's stamps at
--                                 least 1 µs apart (route/clock.rs), and those
--                                 must stay apart in the key
--   unique key  (device, field, time, tags_key) replaces (device, field, time):
--               two relays' or two rooms' readings of one field at one time
--               are two rows, and a redelivery is still a no-op. The new key
--               is added before the old one is dropped, so the table is never
--               without one.
-- Each step asks information_schema first (MySQL 8 has no ADD COLUMN IF NOT
-- EXISTS), so a run that was interrupted completes when run again.

DROP PROCEDURE IF EXISTS co2_readings_values;

CREATE PROCEDURE co2_readings_values()
BEGIN
    DECLARE n INT;
    -- The binary NO PAD collation has a different name on each server.
    DECLARE nopad_bin VARCHAR(64) DEFAULT IF(VERSION() LIKE '%MariaDB%', 'utf8mb4_nopad_bin', 'utf8mb4_0900_bin');

    SELECT COUNT(*) INTO n FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'readings' AND column_name = 'text_value';
    IF n = 0 THEN
        ALTER TABLE readings
            MODIFY COLUMN `value` DOUBLE NULL,
            ADD COLUMN text_value TEXT NULL AFTER `value`;
    END IF;

    SELECT COUNT(*) INTO n FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'readings' AND column_name = 'kind';
    IF n = 0 THEN
        ALTER TABLE readings
            ADD COLUMN kind VARCHAR(8) CHARACTER SET ascii NOT NULL DEFAULT 'number' AFTER text_value;
    END IF;

    SELECT COUNT(*) INTO n FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'readings' AND column_name = 'tags';
    IF n = 0 THEN
        ALTER TABLE readings ADD COLUMN tags JSON NULL AFTER kind;
    END IF;

    SELECT COUNT(*) INTO n FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'readings' AND column_name = 'tags_key';
    IF n = 0 THEN
        ALTER TABLE readings ADD COLUMN tags_key VARBINARY(32) NOT NULL DEFAULT '' AFTER tags;
    END IF;

    SELECT COUNT(*) INTO n FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'readings' AND column_name = 'field'
       AND collation_name = nopad_bin;
    IF n = 0 THEN
        -- Unique under the old (case-insensitive) collation, so unique under this one.
        SET @co2_sql = CONCAT('ALTER TABLE readings MODIFY COLUMN field VARCHAR(64) ',
                              'CHARACTER SET utf8mb4 COLLATE ', nopad_bin, ' NOT NULL');
        PREPARE co2_stmt FROM @co2_sql;
        EXECUTE co2_stmt;
        DEALLOCATE PREPARE co2_stmt;
        SET @co2_sql = NULL;
    END IF;

    SELECT COUNT(*) INTO n FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'readings' AND column_name = 'time'
       AND datetime_precision = 6;
    IF n = 0 THEN
        -- Widening keeps every value (milliseconds are microseconds too).
        ALTER TABLE readings MODIFY COLUMN `time` DATETIME(6) NOT NULL;
    END IF;

    SELECT COUNT(*) INTO n FROM information_schema.statistics
     WHERE table_schema = DATABASE() AND table_name = 'readings'
       AND index_name = 'uq_device_field_time_tags';
    IF n = 0 THEN
        ALTER TABLE readings
            ADD UNIQUE KEY uq_device_field_time_tags (device, field, `time`, tags_key);
    END IF;

    SELECT COUNT(*) INTO n FROM information_schema.statistics
     WHERE table_schema = DATABASE() AND table_name = 'readings'
       AND index_name = 'uq_device_field_time';
    IF n > 0 THEN
        ALTER TABLE readings DROP KEY uq_device_field_time;
    END IF;
END;

CALL co2_readings_values();

DROP PROCEDURE co2_readings_values;

-- Whole JSON objects, one row per message (what a MongoDB consumer's
-- insert_one stores), queryable with JSON_EXTRACT / JSON_VALUE; times in
-- microseconds like readings'. The unique key
-- holds a digest of the tags and the document: a redelivered message is a
-- no-op, while two different documents stamped in the same millisecond (a
-- device that sends no time) are two rows.
CREATE TABLE IF NOT EXISTS documents (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    topic VARCHAR(255) NOT NULL,
    `time` DATETIME(6) NOT NULL,
    tags JSON NULL,
    document JSON NOT NULL,
    content_key BINARY(32) NOT NULL,
    received_at DATETIME(3) NULL DEFAULT CURRENT_TIMESTAMP(3),
    redeliveries INT UNSIGNED NOT NULL DEFAULT 0,
    UNIQUE KEY uq_device_time_content (device, `time`, content_key),
    KEY idx_time (`time`),
    KEY idx_device_time (device, `time`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
