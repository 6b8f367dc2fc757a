-- Dead letters: every message the bridge could not store as a reading, with
-- why. The bridge acks a message only once it is here or in its target table.
CREATE TABLE IF NOT EXISTS rejected_messages (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    received_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    topic VARCHAR(255) NOT NULL,
    -- Truncated to the bridge's dead-letter bound; payload_bytes keeps the real size.
    payload VARBINARY(1024) NOT NULL,
    payload_bytes INT UNSIGNED NOT NULL,
    reason VARCHAR(64) CHARACTER SET ascii NOT NULL,
    KEY idx_received_at (received_at),
    KEY idx_reason (reason, received_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
