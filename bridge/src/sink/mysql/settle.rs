//! Deleting dead letters that were replayed: inside the transaction that
//! stores their rows when this database keeps both, or after the rows are
//! stored elsewhere; and recording how far an import from a legacy table
//! got, inside the transaction that stores what it read.

use sqlx::MySqlConnection;

/// Ids per `DELETE`: a short statement, and few row locks at a time beside
/// the bridge's own inserts and retention passes.
const IDS_PER_STATEMENT: usize = 1000;

/// Deletes the dead letters `ids` from `rejected_messages`; returns how many
/// were still there (a retention pass or another replay may have taken some).
pub async fn delete_letters(conn: &mut MySqlConnection, ids: &[u64]) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let sql = delete_sql(chunk.len());
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        deleted += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(deleted)
}

/// Records `checkpoint` in `import_progress` (the key only moves forward:
/// the reader reads in key order and a batch is committed after the one
/// before it).
pub async fn record_checkpoint(
    conn: &mut MySqlConnection,
    checkpoint: &crate::sink::Checkpoint<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO import_progress (source, last_key, rows_read) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE last_key = VALUES(last_key), rows_read = VALUES(rows_read)",
    )
    .bind(checkpoint.source)
    .bind(checkpoint.key)
    .bind(checkpoint.rows)
    .execute(conn)
    .await?;
    Ok(())
}

/// `DELETE ... WHERE id IN (?, ?, ...)` for `n` ids.
fn delete_sql(n: usize) -> String {
    format!("DELETE FROM rejected_messages WHERE id IN {}", id_list(n))
}

/// `(?, ?, ...)`: `n` placeholders for an `IN` list.
pub fn id_list(n: usize) -> String {
    let mut sql = String::with_capacity(2 + n * 3);
    sql.push('(');
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
    }
    sql.push(')');
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_placeholder_per_id() {
        assert_eq!(
            delete_sql(3),
            "DELETE FROM rejected_messages WHERE id IN (?, ?, ?)"
        );
    }
}
