-- Proof of completeness (README: "Every reading accounted for").
--
-- A publisher numbers its readings per epoch (a new epoch whenever its queue
-- file is replaced) and sends the number with each reading; the bridge keeps
-- it in the row. What the numbers do not cover is found by the completeness
-- scan and kept in reading_gaps, told apart by what the publisher announced
-- it dropped (announced_drops, read from its device_events). Readings that
-- come unnumbered (third-party publishers, MQTT 3.1.1) keep NULLs and are
-- never gaps.

ALTER TABLE co2_emissions
    ADD COLUMN seq_epoch CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN seq BIGINT UNSIGNED NULL,
    ADD KEY idx_device_seq (device, seq_epoch, seq);

-- Announcements as the publishers sent them (JSON of co2-wire's DeviceEvent).
CREATE TABLE IF NOT EXISTS device_events (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    `time` DATETIME(3) NOT NULL,
    event_id CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind VARCHAR(64) CHARACTER SET ascii NOT NULL,
    body TEXT NOT NULL,
    received_at DATETIME(3) NULL DEFAULT CURRENT_TIMESTAMP(3),
    redeliveries INT UNSIGNED NOT NULL DEFAULT 0,
    UNIQUE KEY uq_device_event (device, event_id),
    KEY idx_device_time (device, `time`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Numbers a publisher said it dropped (a bound of its queue, a damaged file).
CREATE TABLE IF NOT EXISTS announced_drops (
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    epoch CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    first_seq BIGINT UNSIGNED NOT NULL,
    last_seq BIGINT UNSIGNED NOT NULL,
    cause VARCHAR(32) CHARACTER SET ascii NOT NULL,
    event_id CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (device, epoch, first_seq, event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Numbers missing from co2_emissions. 'open' while late readings may still
-- fill it (completeness.late_after_s), then 'final' (with how many of them
-- were announced) or 'filled'. from_time/to_time are the times of the
-- readings around it, so a time range finds it.
CREATE TABLE IF NOT EXISTS reading_gaps (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    epoch CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    first_seq BIGINT UNSIGNED NOT NULL,
    last_seq BIGINT UNSIGNED NOT NULL,
    announced BIGINT UNSIGNED NOT NULL DEFAULT 0,
    state VARCHAR(8) CHARACTER SET ascii NOT NULL DEFAULT 'open',
    first_seen DATETIME(3) NOT NULL,
    from_time DATETIME(3) NULL,
    to_time DATETIME(3) NULL,
    UNIQUE KEY uq_gap (device, epoch, first_seq),
    KEY idx_state_seen (state, first_seen),
    KEY idx_from_time (from_time)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Where the scan has got to: the last row of each table it has read, and
-- each (device, epoch)'s highest number it has looked at.
CREATE TABLE IF NOT EXISTS completeness_progress (
    name VARCHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    last_id BIGINT UNSIGNED NOT NULL
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS completeness_epochs (
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    epoch CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    scanned_through BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (device, epoch)
) ENGINE = InnoDB;
