"""The CO2 dashboard's panel queries as they were before rollups: raw rows only.

sql_check.py runs each rewritten panel (which reads the rollup tiers) and the
query here with the same range, interval and variables, and requires equal
results: the raw query is the definition of what a panel shows.
"""

# Panel title -> its raw-only SQL (Grafana macros and variables unexpanded).
RAW = {
    'Latest reading': """SELECT e.date_time AS time, e.device AS metric, e.emissions AS value
FROM co2_emissions e
JOIN (
  SELECT device, MAX(date_time) AS last_time FROM co2_emissions
  WHERE date_time <= $__timeTo() AND ('*' IN ($device) OR device IN ($device))
  GROUP BY device
) l ON l.device = e.device AND l.last_time = e.date_time
ORDER BY 1, 2""",
    'Age of latest reading': """SELECT MAX(date_time) AS time, device AS metric,
  TIMESTAMPDIFF(SECOND, MAX(date_time), $__timeTo()) AS value
FROM co2_emissions
WHERE date_time <= $__timeTo() AND ('*' IN ($device) OR device IN ($device))
GROUP BY device
ORDER BY 1, 2""",
    'CO2 per device': """SELECT $__timeGroupAlias(date_time, $__interval), device AS metric,
  AVG(emissions) AS value
FROM co2_emissions
WHERE $__timeFilter(date_time) AND ('*' IN ($device) OR device IN ($device))
GROUP BY 1, 2
ORDER BY 1, 2""",
    'Last 24 h per device': """SELECT device AS Device, MIN(emissions) AS Min, AVG(emissions) AS Avg,
  MAX(emissions) AS Max, COUNT(*) AS Readings
FROM co2_emissions
WHERE date_time > $__timeTo() - INTERVAL 24 HOUR
  AND date_time <= $__timeTo() AND ('*' IN ($device) OR device IN ($device))
GROUP BY device
ORDER BY device""",
    'Daily totals (UTC days, last 7 days)': """SELECT $__timeGroupAlias(date_time, 1d), device AS metric,
  SUM(emissions) AS value
FROM co2_emissions
WHERE date_time >= FROM_UNIXTIME($__unixEpochFrom() DIV 86400 * 86400)
  AND date_time <= $__timeTo() AND ('*' IN ($device) OR device IN ($device))
GROUP BY 1, 2
ORDER BY 1, 2""",
    'Completeness': """SELECT s.device AS Device,
  s.stored + COALESCE(g.announced, 0) + COALESCE(g.lost, 0) + COALESCE(g.pending, 0) AS Expected,
  s.stored AS Stored,
  COALESCE(g.announced, 0) AS `Dropped at source`,
  COALESCE(g.lost, 0) AS `Lost in transit`,
  COALESCE(g.pending, 0) AS `Not yet arrived`,
  s.unnumbered AS Unnumbered,
  100 * s.stored / NULLIF(s.stored + COALESCE(g.announced, 0) + COALESCE(g.lost, 0)
    + COALESCE(g.pending, 0), 0) AS `Complete %`
FROM (SELECT device, COUNT(seq) AS stored, SUM(seq IS NULL) AS unnumbered
      FROM co2_emissions
      WHERE $__timeFilter(date_time) AND ('*' IN ($device) OR device IN ($device))
      GROUP BY device) s
LEFT JOIN (SELECT device,
      SUM(IF(state = 'final', announced, 0)) AS announced,
      SUM(IF(state = 'final', last_seq - first_seq + 1 - announced, 0)) AS lost,
      SUM(IF(state = 'open', last_seq - first_seq + 1, 0)) AS pending
    FROM reading_gaps
    WHERE state <> 'filled' AND from_time <= $__timeTo() AND to_time >= $__timeFrom()
    GROUP BY device) g ON g.device = s.device
ORDER BY s.device""",
    'Latest readings': """SELECT date_time AS `Time (UTC)`, device AS Device, emissions AS Emissions,
  received_at AS `Stored at (UTC)`,
  TIMESTAMPDIFF(MICROSECOND, date_time, received_at) / 1000000 AS `Stored after`
FROM co2_emissions
WHERE $__timeFilter(date_time) AND ('*' IN ($device) OR device IN ($device))
ORDER BY date_time DESC, device
LIMIT 200""",
    'Bin fill level': """SELECT $__timeGroupAlias(measured_at, $__interval), bin_id AS metric,
  AVG(level) AS value
FROM bin_levels
WHERE $__timeFilter(measured_at) AND level IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2""",
    'Bins reported FULL': """SELECT bin_id AS bin, MAX(measured_at) AS last_full, COUNT(*) AS full_reports
FROM bin_levels
WHERE $__timeFilter(measured_at) AND `full` = 1
GROUP BY bin_id
ORDER BY last_full DESC""",
    'Sensor readings (JSON, bare values): numbers': """SELECT $__timeGroupAlias(`time`, $__interval),
  CONCAT_WS(' ', device, CONVERT(field USING utf8mb4),
    IF(LOCATE('"', field) > 0, NULL, CONCAT('(', JSON_UNQUOTE(JSON_EXTRACT(tags, CONCAT('$."', CONVERT(field USING utf8mb4), '.unit"'))), ')')),
    IF(tags LIKE '%.unit"%' OR tags LIKE '%.device_class"%', NULL, CONVERT(tags USING utf8mb4))) AS metric,
  AVG(value) AS value
FROM readings
WHERE $__timeFilter(`time`) AND kind IN ('number', 'bool')
GROUP BY 1, 2
ORDER BY 1, 2""",
    'Sensor readings (JSON, bare values): latest text': """SELECT r.`time` AS `Time (UTC)`, r.device AS Device, r.field AS Field,
  r.text_value AS `Value`, r.tags AS Tags, r.topic AS Topic
FROM readings r
JOIN (
  SELECT device, field, tags_key, MAX(`time`) AS last_time FROM readings
  WHERE $__timeFilter(`time`) AND kind = 'text'
  GROUP BY device, field, tags_key
) l ON l.device = r.device AND l.field = r.field AND l.tags_key = r.tags_key AND l.last_time = r.`time`
WHERE r.kind = 'text'
ORDER BY r.`time` DESC, r.device, r.field
LIMIT 200""",
    'LoRaWAN readings (decoded fields)': """SELECT $__timeGroupAlias(`time`, $__interval),
  CONCAT_WS(' ', device, CONVERT(field USING utf8mb4)) AS metric,
  AVG(value) AS value
FROM readings
WHERE $__timeFilter(`time`) AND kind IN ('number', 'bool')
  AND field NOT LIKE 'lorawan.%' AND device IN (SELECT device FROM lorawan_frames)
GROUP BY 1, 2
ORDER BY 1, 2""",
    'LoRaWAN signal: best RSSI (dBm), SNR (dB), gateways per uplink': """SELECT $__timeGroupAlias(`time`, $__interval),
  CONCAT_WS(' ', device, CONVERT(field USING utf8mb4)) AS metric,
  AVG(value) AS value
FROM readings
WHERE $__timeFilter(`time`) AND kind IN ('number', 'bool')
  AND field IN ('lorawan.rssi', 'lorawan.snr', 'lorawan.gateways')
GROUP BY 1, 2
ORDER BY 1, 2""",
}

# The $device variable's raw query.
RAW_DEVICE_VARIABLE = 'SELECT DISTINCT device FROM co2_emissions'
