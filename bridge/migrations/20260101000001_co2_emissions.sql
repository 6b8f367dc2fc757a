-- co2_emissions: created fresh, or adopted from the documented seed shape
-- (`date_time DATETIME, emissions DOUBLE(7,2)`) without dropping a row.
--
-- Both paths go through the same steps: create the seed shape if the table is
-- missing, then add what is missing. MySQL 8 has no ADD COLUMN IF NOT EXISTS,
-- so the steps live in a procedure that asks information_schema first.
-- Rows that cannot satisfy the new constraints (NULL time or value, or a
-- second row for the same time) are moved, not deleted, to
-- co2_emissions_adopted_conflicts for a human to look at.

CREATE TABLE IF NOT EXISTS co2_emissions (
    date_time DATETIME(3) NOT NULL,
    emissions DOUBLE(7,2) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

DROP PROCEDURE IF EXISTS co2_adopt_emissions;

CREATE PROCEDURE co2_adopt_emissions()
BEGIN
    DECLARE has_column INT;
    DECLARE conflicts INT;

    SELECT COUNT(*) INTO has_column FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'co2_emissions' AND column_name = 'id';
    IF has_column = 0 THEN
        ALTER TABLE co2_emissions
            ADD COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY FIRST;
    END IF;

    SELECT COUNT(*) INTO has_column FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'co2_emissions' AND column_name = 'device';
    IF has_column = 0 THEN
        -- The default keeps a legacy one-row-per-message inserter working
        -- during the switch-over; its rows land under the default device.
        ALTER TABLE co2_emissions
            ADD COLUMN device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin
                NOT NULL DEFAULT 'default' AFTER id;
    END IF;

    SELECT COUNT(*) INTO has_column FROM information_schema.columns
     WHERE table_schema = DATABASE() AND table_name = 'co2_emissions' AND column_name = 'received_at';
    IF has_column = 0 THEN
        -- Adopted rows were received at an unknown time: NULL, not "now".
        ALTER TABLE co2_emissions ADD COLUMN received_at DATETIME(3) NULL DEFAULT NULL;
        ALTER TABLE co2_emissions
            MODIFY COLUMN received_at DATETIME(3) NULL DEFAULT CURRENT_TIMESTAMP(3);
    END IF;

    SELECT COUNT(*) INTO has_column FROM information_schema.statistics
     WHERE table_schema = DATABASE() AND table_name = 'co2_emissions'
       AND index_name = 'uq_device_date_time';
    IF has_column = 0 THEN
        SELECT COUNT(*) INTO conflicts FROM co2_emissions e
         WHERE e.date_time IS NULL OR e.emissions IS NULL
            OR EXISTS (SELECT 1 FROM co2_emissions o
                        WHERE o.device = e.device AND o.date_time = e.date_time AND o.id < e.id);
        IF conflicts > 0 THEN
            CREATE TABLE IF NOT EXISTS co2_emissions_adopted_conflicts LIKE co2_emissions;
            INSERT INTO co2_emissions_adopted_conflicts
            SELECT e.* FROM co2_emissions e
             WHERE e.date_time IS NULL OR e.emissions IS NULL
                OR EXISTS (SELECT 1 FROM co2_emissions o
                            WHERE o.device = e.device AND o.date_time = e.date_time AND o.id < e.id);
            DELETE FROM co2_emissions WHERE id IN (SELECT id FROM co2_emissions_adopted_conflicts);
        END IF;
        ALTER TABLE co2_emissions
            MODIFY COLUMN date_time DATETIME(3) NOT NULL,
            MODIFY COLUMN emissions DOUBLE(7,2) NOT NULL,
            ADD UNIQUE KEY uq_device_date_time (device, date_time),
            ADD KEY idx_date_time (date_time);
    END IF;
END;

CALL co2_adopt_emissions();

DROP PROCEDURE co2_adopt_emissions;
