-- co2-telemetry: list the REVOKE statements that bring the bridge and Grafana
-- accounts down to exactly the grants users.sql gives them. Prints one
-- statement per row and changes nothing; provisioning/mysql/apply.sh runs what
-- it prints. Needs the session variables of users.sql (@co2_db, @bridge_user,
-- @bridge_host, @grafana_user, @grafana_host) and an account that can read
-- other users' privileges (the admin account).
--
-- Revoking only the excess (instead of REVOKE ALL + GRANT) means a running
-- bridge never sees a moment without its privileges.

SET @co2_db_grant = REPLACE(REPLACE(@co2_db, '_', CONCAT(CHAR(92 USING utf8mb4), '_')), '%', CONCAT(CHAR(92 USING utf8mb4), '%'));

WITH wanted (grantee, priv) AS (
    SELECT CONCAT('''', @bridge_user, '''@''', @bridge_host, ''''), 'SELECT'
    UNION ALL SELECT CONCAT('''', @bridge_user, '''@''', @bridge_host, ''''), 'INSERT'
    UNION ALL SELECT CONCAT('''', @bridge_user, '''@''', @bridge_host, ''''), 'UPDATE'
    UNION ALL SELECT CONCAT('''', @grafana_user, '''@''', @grafana_host, ''''), 'SELECT'
),
accounts (grantee, account) AS (
    SELECT CONCAT('''', @bridge_user, '''@''', @bridge_host, ''''),
           CONCAT(QUOTE(@bridge_user), '@', QUOTE(@bridge_host))
    UNION ALL
    SELECT CONCAT('''', @grafana_user, '''@''', @grafana_host, ''''),
           CONCAT(QUOTE(@grafana_user), '@', QUOTE(@grafana_host))
)
-- Global privileges (ON *.*): none are wanted.
SELECT CONCAT('REVOKE ', p.PRIVILEGE_TYPE, ' ON *.* FROM ', a.account, ';') AS stmt
  FROM information_schema.USER_PRIVILEGES p JOIN accounts a ON a.grantee = p.GRANTEE
 WHERE p.PRIVILEGE_TYPE <> 'USAGE'
UNION ALL
SELECT CONCAT('REVOKE GRANT OPTION ON *.* FROM ', a.account, ';')
  FROM information_schema.USER_PRIVILEGES p JOIN accounts a ON a.grantee = p.GRANTEE
 WHERE p.IS_GRANTABLE = 'YES'
 GROUP BY a.account
UNION ALL
-- Database privileges: only the wanted ones, only on this database.
SELECT CONCAT('REVOKE ', p.PRIVILEGE_TYPE, ' ON `', REPLACE(p.TABLE_SCHEMA, '`', '``'), '`.* FROM ', a.account, ';')
  FROM information_schema.SCHEMA_PRIVILEGES p JOIN accounts a ON a.grantee = p.GRANTEE
 WHERE p.TABLE_SCHEMA <> @co2_db_grant
    OR NOT EXISTS (SELECT 1 FROM wanted w WHERE w.grantee = p.GRANTEE AND w.priv = p.PRIVILEGE_TYPE)
UNION ALL
SELECT DISTINCT CONCAT('REVOKE GRANT OPTION ON `', REPLACE(p.TABLE_SCHEMA, '`', '``'), '`.* FROM ', a.account, ';')
  FROM information_schema.SCHEMA_PRIVILEGES p JOIN accounts a ON a.grantee = p.GRANTEE
 WHERE p.IS_GRANTABLE = 'YES'
UNION ALL
-- Table and column privileges: only the bridge's DELETE on this database's
-- rejected_messages (dead-letter retention); the database grant covers the rest.
SELECT CONCAT('REVOKE ', p.PRIVILEGE_TYPE, ' ON `', REPLACE(p.TABLE_SCHEMA, '`', '``'), '`.`',
              REPLACE(p.TABLE_NAME, '`', '``'), '` FROM ', a.account, ';')
  FROM information_schema.TABLE_PRIVILEGES p JOIN accounts a ON a.grantee = p.GRANTEE
 WHERE NOT (p.GRANTEE = CONCAT('''', @bridge_user, '''@''', @bridge_host, '''')
            AND p.TABLE_SCHEMA = @co2_db AND p.TABLE_NAME = 'rejected_messages'
            AND p.PRIVILEGE_TYPE = 'DELETE')
UNION ALL
SELECT DISTINCT CONCAT('REVOKE ', p.PRIVILEGE_TYPE, ' (`', REPLACE(p.COLUMN_NAME, '`', '``'), '`) ON `',
              REPLACE(p.TABLE_SCHEMA, '`', '``'), '`.`', REPLACE(p.TABLE_NAME, '`', '``'), '` FROM ',
              a.account, ';')
  FROM information_schema.COLUMN_PRIVILEGES p JOIN accounts a ON a.grantee = p.GRANTEE;
