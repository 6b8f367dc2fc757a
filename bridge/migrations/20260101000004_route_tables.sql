-- Tables of the shipped example routes (see bridge/routes.example.toml).
-- Every route table follows the co2_emissions convention: a unique key on what
-- identifies a reading, so a redelivered message is a no-op, and a
-- `redeliveries` counter the bridge bumps instead (which is how it counts
-- duplicates). A payload without its own time is stamped with the receive
-- time, so its redelivery is a new row: only payloads that carry a time are
-- exactly-once.

-- A smart bin: "<level> <bin id> <YYYY-MM-DD> <hh:mm:ss>", level a number or FULL.
CREATE TABLE IF NOT EXISTS bin_levels (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    bin_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    measured_at DATETIME(3) NOT NULL,
    level DOUBLE NULL,
    `full` TINYINT(1) NOT NULL DEFAULT 0,
    received_at DATETIME(3) NULL DEFAULT CURRENT_TIMESTAMP(3),
    redeliveries INT UNSIGNED NOT NULL DEFAULT 0,
    UNIQUE KEY uq_bin_measured_at (bin_id, measured_at),
    KEY idx_measured_at (measured_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Numeric fields of JSON sensors (e.g. a DHT11's temperature and humidity), long format.
CREATE TABLE IF NOT EXISTS readings (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    topic VARCHAR(255) NOT NULL,
    `time` DATETIME(3) NOT NULL,
    field VARCHAR(64) NOT NULL,
    value DOUBLE NOT NULL,
    received_at DATETIME(3) NULL DEFAULT CURRENT_TIMESTAMP(3),
    redeliveries INT UNSIGNED NOT NULL DEFAULT 0,
    UNIQUE KEY uq_device_field_time (device, field, `time`),
    KEY idx_time (`time`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Camera snapshots and other files, up to 16 MiB each.
CREATE TABLE IF NOT EXISTS images (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    `time` DATETIME(3) NOT NULL,
    content_type VARCHAR(64) CHARACTER SET ascii NOT NULL,
    size INT UNSIGNED NOT NULL,
    data MEDIUMBLOB NOT NULL,
    received_at DATETIME(3) NULL DEFAULT CURRENT_TIMESTAMP(3),
    redeliveries INT UNSIGNED NOT NULL DEFAULT 0,
    UNIQUE KEY uq_device_time (device, `time`),
    KEY idx_device_id (device, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
