//! `rejected_messages` as the replay reads and updates it: chunks in id
//! order (keyset, so each query is a short range scan of the primary key),
//! and today's reason for the letters that are refused again.

use chrono::NaiveDateTime;
use sqlx::MySqlPool;

use super::selection::Selection;
use crate::sink::mysql::settle::{self, id_list};

/// One stored dead letter, whole.
#[derive(Debug, Clone)]
pub struct Letter {
    /// Its id (ids only grow).
    pub id: u64,
    /// When the bridge stored it (UTC).
    pub received_at: NaiveDateTime,
    /// Where it came from (see [`super::origin`]).
    pub topic: String,
    /// The payload as kept: its first `wire.dead_letter_payload_bytes` bytes.
    pub payload: Vec<u8>,
    /// The payload's real size.
    pub payload_bytes: u32,
    /// Why it was refused when it was stored.
    pub reason: String,
    /// What the store said, if it was the store that refused it.
    pub detail: Option<String>,
}

impl Letter {
    /// True when only the first bytes of the payload were kept.
    pub fn truncated(&self) -> bool {
        (self.payload.len() as u64) < u64::from(self.payload_bytes)
    }
}

type Row = (
    u64,
    NaiveDateTime,
    String,
    Vec<u8>,
    u32,
    String,
    Option<String>,
);

/// The newest letter's id now (0 for none): a run takes no letter stored
/// after it started, so it ends even while a bridge keeps refusing more.
pub async fn newest_id(pool: &MySqlPool) -> Result<u64, sqlx::Error> {
    let newest: Option<u64> = sqlx::query_scalar("SELECT MAX(id) FROM rejected_messages")
        .fetch_one(pool)
        .await?;
    Ok(newest.unwrap_or(0))
}

/// Up to `n` letters with ids in `(after, upto]` that pass the selection's
/// reason and time filters, in id order (route and device are not columns:
/// the caller resolves them).
pub async fn chunk(
    pool: &MySqlPool,
    selection: &Selection,
    after: u64,
    upto: u64,
    n: u32,
) -> Result<Vec<Letter>, sqlx::Error> {
    let sql = chunk_sql(selection);
    let mut query = sqlx::query_as::<_, Row>(&sql).bind(after).bind(upto);
    for reason in &selection.reasons {
        query = query.bind(reason.as_str());
    }
    if let Some(from) = selection.from {
        query = query.bind(from);
    }
    if let Some(to) = selection.to {
        query = query.bind(to);
    }
    let rows = query.bind(n).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, received_at, topic, payload, payload_bytes, reason, detail)| Letter {
                id,
                received_at,
                topic,
                payload,
                payload_bytes,
                reason,
                detail,
            },
        )
        .collect())
}

fn chunk_sql(selection: &Selection) -> String {
    let mut sql = String::from(
        "SELECT id, received_at, topic, payload, payload_bytes, CAST(reason AS CHAR), detail \
         FROM rejected_messages WHERE id > ? AND id <= ?",
    );
    if !selection.reasons.is_empty() {
        sql.push_str(" AND reason IN ");
        sql.push_str(&id_list(selection.reasons.len()));
    }
    if selection.from.is_some() {
        sql.push_str(" AND received_at >= ?");
    }
    if selection.to.is_some() {
        sql.push_str(" AND received_at < ?");
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    sql
}

/// Gives the letters `ids` today's reason and detail (they stay dead letters).
pub async fn refuse_again(
    pool: &MySqlPool,
    reason: &str,
    detail: Option<&str>,
    ids: &[u64],
) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(1000) {
        let sql = format!(
            "UPDATE rejected_messages SET reason = ?, detail = ? WHERE id IN {}",
            id_list(chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(reason).bind(detail);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(pool).await?;
    }
    Ok(())
}

/// Deletes the letters `ids`, whose rows another sink has stored.
pub async fn delete(pool: &MySqlPool, ids: &[u64]) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    settle::delete_letters(&mut conn, ids).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reason;

    #[test]
    fn each_filter_adds_its_condition_and_placeholders() {
        let all = chunk_sql(&Selection::default());
        assert!(all.ends_with("WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"));
        let some = chunk_sql(&Selection {
            reasons: vec![Reason::TooFarInFuture, Reason::BadDatetime],
            from: Some(NaiveDateTime::default()),
            to: Some(NaiveDateTime::default()),
            ..Selection::default()
        });
        assert!(some
            .contains("AND reason IN (?, ?) AND received_at >= ? AND received_at < ? ORDER BY id"));
        assert_eq!(some.matches('?').count(), 2 + 2 + 2 + 1);
    }

    #[test]
    fn a_payload_shorter_than_its_size_was_truncated() {
        let letter = |payload: &[u8], payload_bytes| Letter {
            id: 1,
            received_at: NaiveDateTime::default(),
            topic: String::new(),
            payload: payload.to_vec(),
            payload_bytes,
            reason: String::new(),
            detail: None,
        };
        assert!(letter(b"abc", 4).truncated());
        assert!(!letter(b"abc", 3).truncated());
        assert!(!letter(b"", 0).truncated());
    }
}
