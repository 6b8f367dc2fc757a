-- LoRaWAN frame counters (docs/routes.md, "LoRaWAN"): one row per uplink a
-- lorawan route stored, written in the transaction of its readings. The
-- completeness scan reads them as it reads co2_emissions' numbers: a
-- session is an epoch (named from its DevAddr and the receive time of its
-- first frame), the frame counter the number. One row per device and receive
-- time, so a redelivered uplink is a no-op here too.
CREATE TABLE IF NOT EXISTS lorawan_frames (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    `time` DATETIME(6) NOT NULL,
    dev_addr INT UNSIGNED NOT NULL,
    epoch CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    f_cnt BIGINT UNSIGNED NOT NULL,
    received_at DATETIME(3) NULL DEFAULT CURRENT_TIMESTAMP(3),
    redeliveries INT UNSIGNED NOT NULL DEFAULT 0,
    -- The time in every unique key, so retention can partition by it.
    PRIMARY KEY (id, `time`),
    UNIQUE KEY uq_device_time (device, `time`),
    KEY idx_device_epoch_fcnt (device, epoch, f_cnt),
    -- The dashboard's frame loss table counts the frames of a time range.
    KEY idx_time (`time`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
