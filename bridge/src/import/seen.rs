//! The dead letters an earlier run of the same import already stored, so a
//! rerun refuses its bad lines again without storing them twice: a row is
//! a no-op the second time (the table's unique key), and its line's dead
//! letter is too. A letter is the same when it names the same input and
//! line (its detail starts `<input>:<line>:`) and holds the same payload;
//! its reason and words may differ (a time refused as too far ahead is
//! explained relative to now).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use sqlx::MySqlPool;

/// Lines of each input already dead-lettered, with a digest of the payload.
pub struct Seen {
    pool: MySqlPool,
    topic: String,
    by_source: HashMap<String, HashSet<(u64, u64)>>,
    digest: foldhash::fast::FixedState,
}

impl Seen {
    /// The dead letters of `topic` in the table `pool` reaches, read per
    /// input the first time it is asked about.
    pub fn new(pool: MySqlPool, topic: String) -> Self {
        Self {
            pool,
            topic,
            by_source: HashMap::new(),
            digest: foldhash::fast::FixedState::with_seed(0x5eed),
        }
    }

    /// True when line `line` of `source` with `payload` is already a dead letter.
    pub async fn contains(
        &mut self,
        source: &str,
        line: u64,
        payload: &[u8],
    ) -> Result<bool, sqlx::Error> {
        if !self.by_source.contains_key(source) {
            let known = self.load(source).await?;
            self.by_source.insert(source.to_owned(), known);
        }
        let digest = self.digest(payload);
        Ok(self
            .by_source
            .get(source)
            .is_some_and(|known| known.contains(&(line, digest))))
    }

    async fn load(&self, source: &str) -> Result<HashSet<(u64, u64)>, sqlx::Error> {
        let prefix = format!("{source}:");
        let pattern = format!("{}%", like_escaped(&prefix));
        let letters: Vec<(Option<String>, Vec<u8>)> = sqlx::query_as(
            "SELECT detail, payload FROM rejected_messages WHERE topic = ? AND detail LIKE ?",
        )
        .bind(&self.topic)
        .bind(pattern)
        .fetch_all(&self.pool)
        .await?;
        Ok(letters
            .iter()
            .filter_map(|(detail, payload)| {
                let rest = detail.as_deref()?.strip_prefix(&prefix)?;
                let line = rest.split(':').next()?.parse().ok()?;
                Some((line, self.digest(payload)))
            })
            .collect())
    }

    fn digest(&self, payload: &[u8]) -> u64 {
        self.digest.hash_one(payload)
    }
}

/// `text` for a LIKE pattern, its wildcards and the escape character escaped.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::like_escaped;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_escaped(r"a_b%c\d.csv:"), r"a\_b\%c\\d.csv:");
    }
}
