-- What the store said when it refused a message (e.g. MySQL's "Out of range
-- value for column 'emissions'", or InfluxDB's field type conflict), so a
-- dead letter explains itself. NULL for messages the bridge itself refused.
ALTER TABLE rejected_messages
    ADD COLUMN detail VARCHAR(255) NULL AFTER reason;
