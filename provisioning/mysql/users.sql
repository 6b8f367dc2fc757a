-- co2-telemetry: database, runtime users and their grants (MySQL 8 / MariaDB 10.11).
--
-- Run as an admin account (the installer uses the unix-socket root) through
-- provisioning/mysql/apply.sh, which sets these session variables first (so
-- names and passwords never sit in this file or on a command line):
--   @co2_db                 database name, e.g. co2
--   @bridge_user, @bridge_host, @bridge_password, @bridge_set_password (0/1)
--   @grafana_user, @grafana_host, @grafana_password, @grafana_set_password (0/1)
-- *_set_password = 0 leaves an existing account's password alone (it already
-- works), so a re-run changes nothing.
--
-- Grants:
--   bridge : SELECT, INSERT, UPDATE on @co2_db only. INSERT ... ON DUPLICATE KEY
--            UPDATE needs UPDATE. No DDL: schema changes run through
--            `co2-bridge migrate` with an admin account at install/upgrade time.
--            And DELETE on rejected_messages alone, for the dead letters'
--            retention; a table grant needs the table, so it is given once the
--            migrations have created it (installers run this again after them).
--   grafana: SELECT on @co2_db only.
-- Anything beyond that (left over from a hand-made setup) is listed by
-- excess-grants.sql and revoked by apply.sh.

-- In a GRANT, `_` and `%` in a database name are wildcards: escape them so
-- `co2_x` does not also match `co2Ax`.
SET @co2_db_grant = REPLACE(REPLACE(@co2_db, '_', CONCAT(CHAR(92 USING utf8mb4), '_')), '%', CONCAT(CHAR(92 USING utf8mb4), '%'));
SET @db_ident = CONCAT('`', REPLACE(@co2_db, '`', '``'), '`');
SET @db_grant_ident = CONCAT('`', REPLACE(@co2_db_grant, '`', '``'), '`');
SET @bridge_account = CONCAT(QUOTE(@bridge_user), '@', QUOTE(@bridge_host));
SET @grafana_account = CONCAT(QUOTE(@grafana_user), '@', QUOTE(@grafana_host));

SET @stmt = CONCAT('CREATE DATABASE IF NOT EXISTS ', @db_ident,
                   ' CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci');
PREPARE s FROM @stmt; EXECUTE s; DEALLOCATE PREPARE s;

-- Bridge account.
SET @stmt = CONCAT('CREATE USER IF NOT EXISTS ', @bridge_account,
                   ' IDENTIFIED BY ', QUOTE(@bridge_password));
PREPARE s FROM @stmt; EXECUTE s; DEALLOCATE PREPARE s;
SET @stmt = IF(@bridge_set_password = 1,
               CONCAT('ALTER USER ', @bridge_account, ' IDENTIFIED BY ', QUOTE(@bridge_password)),
               'DO 0');
PREPARE s FROM @stmt; EXECUTE s; DEALLOCATE PREPARE s;
SET @stmt = CONCAT('GRANT SELECT, INSERT, UPDATE ON ', @db_grant_ident, '.* TO ', @bridge_account);
PREPARE s FROM @stmt; EXECUTE s; DEALLOCATE PREPARE s;
SET @stmt = IF((SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = @co2_db AND table_name = 'rejected_messages') = 1,
               CONCAT('GRANT DELETE ON ', @db_ident, '.`rejected_messages` TO ', @bridge_account),
               'DO 0');
PREPARE s FROM @stmt; EXECUTE s; DEALLOCATE PREPARE s;

-- Grafana account (read-only).
SET @stmt = CONCAT('CREATE USER IF NOT EXISTS ', @grafana_account,
                   ' IDENTIFIED BY ', QUOTE(@grafana_password));
PREPARE s FROM @stmt; EXECUTE s; DEALLOCATE PREPARE s;
SET @stmt = IF(@grafana_set_password = 1,
               CONCAT('ALTER USER ', @grafana_account, ' IDENTIFIED BY ', QUOTE(@grafana_password)),
               'DO 0');
PREPARE s FROM @stmt; EXECUTE s; DEALLOCATE PREPARE s;
SET @stmt = CONCAT('GRANT SELECT ON ', @db_grant_ident, '.* TO ', @grafana_account);
PREPARE s FROM @stmt; EXECUTE s; DEALLOCATE PREPARE s;

-- Drop the password variables from the session as soon as they are used.
SET @bridge_password = NULL, @grafana_password = NULL, @stmt = NULL;
