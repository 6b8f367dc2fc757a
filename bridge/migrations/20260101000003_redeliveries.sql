-- How often a stored reading arrived again (at-least-once redelivery).
--
-- The bridge writes `ON DUPLICATE KEY UPDATE redeliveries = redeliveries + 1`
-- rather than a no-op `id = id`: sqlx always sets CLIENT_FOUND_ROWS, under
-- which a no-op update reports one affected row, exactly like an insert, so
-- duplicates could not be counted. With a real change a duplicate reports
-- two, and the reading's value is never touched.
ALTER TABLE co2_emissions
    ADD COLUMN redeliveries INT UNSIGNED NOT NULL DEFAULT 0;
