-- Time partitions (issue 29: retention drops a day of raw rows in
-- milliseconds, never a DELETE of millions of rows) need every unique key of
-- a table to hold the partitioning column. The primary keys of the three
-- tables with rollups were `id` alone; they become (id, time). `id` stays
-- AUTO_INCREMENT (so still unique in practice) and is still the
-- completeness scan's arrival-order cursor; the unique keys on what
-- identifies a reading already hold the time. Each ALTER copies its table
-- once: on a large adopted table this takes minutes (progress is logged).
-- The partitions themselves are made by `co2-bridge migrate` after this,
-- with bounds from each table's oldest row.

ALTER TABLE co2_emissions DROP PRIMARY KEY, ADD PRIMARY KEY (id, date_time);
ALTER TABLE readings DROP PRIMARY KEY, ADD PRIMARY KEY (id, `time`);
ALTER TABLE bin_levels DROP PRIMARY KEY, ADD PRIMARY KEY (id, measured_at);
