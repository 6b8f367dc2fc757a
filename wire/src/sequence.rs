//! Sequence numbers at the source: which reading of which numbering this is.
//!
//! A publisher numbers its readings 1, 2, 3, ... within an [`Epoch`]: one
//! numbering whose continuity one store (the on-disk queue, or the memory
//! queue while the disk is unusable) guarantees. When that store is replaced
//! (a corrupt queue moved aside, a fresh install, the switch to memory) a new
//! epoch starts at 1 again, so a number is never reused for another reading.
//!
//! On the wire a number is `<epoch>:<n>`: the epoch as exactly 16 lowercase
//! hex digits, `n` in decimal without leading zeros, e.g.
//! `3f9a0c11d2e4b5a6:1042`. Over MQTT v5 it travels as the user property
//! [`SEQ_PROPERTY`], leaving the `datetime|emissions` payload untouched.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

/// The MQTT v5 user property that carries a reading's [`Seq`].
pub const SEQ_PROPERTY: &str = "co2-seq";

/// Longest text form of a [`Seq`]: 16 hex digits, `:`, 20 decimal digits.
pub const MAX_SEQ_LEN: usize = 16 + 1 + 20;

/// One numbering of a device's readings; a random 64-bit id in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(u64);

impl Epoch {
    /// The epoch with this id.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// Its id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Exactly 16 lowercase hex digits.
impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Epoch {
    type Err = SeqError;

    fn from_str(s: &str) -> Result<Self, SeqError> {
        let lowercase_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if s.len() != 16 || !s.as_bytes().iter().all(lowercase_hex) {
            return Err(SeqError::BadEpoch);
        }
        u64::from_str_radix(s, 16)
            .map(Epoch)
            .map_err(|_| SeqError::BadEpoch)
    }
}

/// A reading's number: the `n`-th reading (from 1) of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seq {
    epoch: Epoch,
    n: u64,
}

impl Seq {
    /// Number `n` of `epoch`; `None` for 0 (numbers start at 1, so a bridge
    /// can tell that the first readings of an epoch are missing).
    pub const fn new(epoch: Epoch, n: u64) -> Option<Self> {
        if n == 0 {
            None
        } else {
            Some(Self { epoch, n })
        }
    }

    /// Number `n` of `epoch`, infallibly.
    pub const fn from_nonzero(epoch: Epoch, n: NonZeroU64) -> Self {
        Self { epoch, n: n.get() }
    }

    /// The numbering it belongs to.
    pub const fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Its number within the epoch (at least 1).
    pub const fn n(&self) -> u64 {
        self.n
    }
}

/// `<epoch>:<n>`, e.g. `3f9a0c11d2e4b5a6:1042`.
impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.n)
    }
}

impl FromStr for Seq {
    type Err = SeqError;

    /// Accepts exactly what [`Seq`]'s `Display` writes, nothing else.
    fn from_str(s: &str) -> Result<Self, SeqError> {
        if s.len() > MAX_SEQ_LEN {
            return Err(SeqError::TooLong);
        }
        let (epoch, n) = s.split_once(':').ok_or(SeqError::MissingColon)?;
        let epoch: Epoch = epoch.parse()?;
        let n = parse_number(n)?;
        Seq::new(epoch, n).ok_or(SeqError::BadNumber)
    }
}

/// A decimal `u64` without sign, leading zeros or anything around it.
fn parse_number(s: &str) -> Result<u64, SeqError> {
    let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (s.len() > 1 && s.starts_with('0')) {
        return Err(SeqError::BadNumber);
    }
    s.parse().map_err(|_| SeqError::BadNumber)
}

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SeqError {
    /// Longer than [`MAX_SEQ_LEN`].
    #[error("sequence number is longer than {MAX_SEQ_LEN} characters")]
    TooLong,
    /// No `:` between epoch and number.
    #[error("sequence number has no ':' between epoch and number")]
    MissingColon,
    /// The epoch is not 16 lowercase hex digits.
    #[error("epoch is not 16 lowercase hex digits")]
    BadEpoch,
    /// The number is not a decimal from 1 to 2^64-1 without leading zeros.
    #[error("number is not a decimal from 1 to 18446744073709551615 without leading zeros")]
    BadNumber,
    /// A range whose last number is below its first.
    #[error("range ends before it starts")]
    BackwardRange,
}

impl SeqError {
    /// A short, stable, snake_case name (a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            SeqError::TooLong => "seq_too_long",
            SeqError::MissingColon => "seq_missing_colon",
            SeqError::BadEpoch => "seq_bad_epoch",
            SeqError::BadNumber => "seq_bad_number",
            SeqError::BackwardRange => "seq_backward_range",
        }
    }
}

/// Numbers `first..=last` of one epoch (announcements name what they cover this way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqRange {
    epoch: Epoch,
    first: u64,
    last: u64,
}

impl SeqRange {
    /// `first..=last` of `epoch`; refused when `first` is 0 or `last < first`.
    pub fn new(epoch: Epoch, first: u64, last: u64) -> Result<Self, SeqError> {
        if first == 0 {
            return Err(SeqError::BadNumber);
        }
        if last < first {
            return Err(SeqError::BackwardRange);
        }
        Ok(Self { epoch, first, last })
    }

    /// The range holding just `seq`.
    pub fn single(seq: Seq) -> Self {
        Self {
            epoch: seq.epoch,
            first: seq.n,
            last: seq.n,
        }
    }

    /// Its epoch.
    pub const fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// First number, inclusive.
    pub const fn first(&self) -> u64 {
        self.first
    }

    /// Last number, inclusive.
    pub const fn last(&self) -> u64 {
        self.last
    }

    /// How many numbers it covers (saturating at `u64::MAX`).
    pub const fn len(&self) -> u64 {
        (self.last - self.first).saturating_add(1)
    }

    /// Always false: a range holds at least one number.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Whether it holds `seq`.
    pub fn contains(&self, seq: Seq) -> bool {
        seq.epoch == self.epoch && (self.first..=self.last).contains(&seq.n)
    }

    /// Extends this range by `other` when `other` continues it directly
    /// (same epoch, `other.first == self.last + 1`); returns whether it did.
    pub fn extend(&mut self, other: &SeqRange) -> bool {
        if other.epoch == self.epoch && self.last.checked_add(1) == Some(other.first) {
            self.last = other.last;
            true
        } else {
            false
        }
    }
}

/// The fewest ranges covering exactly `seqs` (any order, repeats ignored),
/// sorted by epoch, then number.
pub fn ranges_of(seqs: impl IntoIterator<Item = Seq>) -> Vec<SeqRange> {
    let mut seqs: Vec<Seq> = seqs.into_iter().collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut out: Vec<SeqRange> = Vec::new();
    for seq in seqs {
        let next = SeqRange::single(seq);
        let extended = out.last_mut().is_some_and(|last| last.extend(&next));
        if !extended {
            out.push(next);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Epoch = Epoch::new(0x3f9a_0c11_d2e4_b5a6);

    #[test]
    fn text_form() {
        let seq = Seq::new(E, 1042).unwrap();
        assert_eq!(seq.to_string(), "3f9a0c11d2e4b5a6:1042");
        assert_eq!("3f9a0c11d2e4b5a6:1042".parse::<Seq>(), Ok(seq));
        assert_eq!(Epoch::new(1).to_string(), "0000000000000001");
        let max = Seq::new(Epoch::new(u64::MAX), u64::MAX).unwrap();
        assert_eq!(max.to_string().len(), MAX_SEQ_LEN);
        assert_eq!(max.to_string().parse::<Seq>(), Ok(max));
    }

    #[test]
    fn only_the_canonical_form_is_accepted() {
        for (text, why) in [
            ("", SeqError::MissingColon),
            ("3f9a0c11d2e4b5a6", SeqError::MissingColon),
            ("3F9A0C11D2E4B5A6:1", SeqError::BadEpoch),
            ("3f9a0c11d2e4b5a:1", SeqError::BadEpoch),
            ("+f9a0c11d2e4b5a6:1", SeqError::BadEpoch),
            ("3f9a0c11d2e4b5a6:0", SeqError::BadNumber),
            ("3f9a0c11d2e4b5a6:01", SeqError::BadNumber),
            ("3f9a0c11d2e4b5a6:+1", SeqError::BadNumber),
            ("3f9a0c11d2e4b5a6:1 ", SeqError::BadNumber),
            ("3f9a0c11d2e4b5a6:", SeqError::BadNumber),
            ("3f9a0c11d2e4b5a6:1:2", SeqError::BadNumber),
            ("3f9a0c11d2e4b5a6:18446744073709551616", SeqError::BadNumber),
            ("3f9a0c11d2e4b5a6:123456789012345678901", SeqError::TooLong),
            ("ééééééééé:1", SeqError::BadEpoch),
        ] {
            assert_eq!(text.parse::<Seq>(), Err(why), "{text:?}");
        }
    }

    #[test]
    fn ranges_merge_runs_per_epoch() {
        let other = Epoch::new(7);
        let s = |e, n| Seq::new(e, n).unwrap();
        let got = ranges_of([s(E, 5), s(E, 3), s(E, 4), s(E, 9), s(other, 1), s(E, 4)]);
        assert_eq!(
            got,
            [
                SeqRange::new(other, 1, 1).unwrap(),
                SeqRange::new(E, 3, 5).unwrap(),
                SeqRange::new(E, 9, 9).unwrap(),
            ]
        );
        assert_eq!(got[1].len(), 3);
        assert!(got[1].contains(s(E, 4)) && !got[1].contains(s(other, 4)));
        assert_eq!(SeqRange::new(E, 2, 1), Err(SeqError::BackwardRange));
        assert_eq!(SeqRange::new(E, 0, 1), Err(SeqError::BadNumber));
        let mut top = SeqRange::new(E, u64::MAX, u64::MAX).unwrap();
        assert!(!top.extend(&SeqRange::new(E, 1, 1).unwrap()));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn format_then_parse_round_trips(epoch in any::<u64>(), n in 1u64..) {
                let seq = Seq::new(Epoch::new(epoch), n).unwrap();
                prop_assert_eq!(seq.to_string().parse::<Seq>(), Ok(seq));
            }

            #[test]
            fn arbitrary_text_never_panics(s in "\\PC{0,60}") {
                let _ = s.parse::<Seq>();
                let _ = s.parse::<Epoch>();
            }

            #[test]
            fn near_misses_never_panic_and_parse_only_canonically(s in "[0-9a-fA-F:+-]{0,40}") {
                if let Ok(seq) = s.parse::<Seq>() {
                    prop_assert_eq!(seq.to_string(), s);
                }
            }

            #[test]
            fn ranges_cover_exactly_the_numbers_given(
                ns in proptest::collection::vec((0u64..3, 1u64..200), 0..100),
            ) {
                let seqs: Vec<Seq> = ns
                    .iter()
                    .map(|&(e, n)| Seq::new(Epoch::new(e), n).unwrap())
                    .collect();
                let ranges = ranges_of(seqs.iter().copied());
                let mut distinct = seqs.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let covered: u64 = ranges.iter().map(SeqRange::len).sum();
                prop_assert_eq!(covered, distinct.len() as u64);
                prop_assert!(seqs.iter().all(|s| ranges.iter().any(|r| r.contains(*s))));
                // Fewest: no two ranges could be merged.
                let mergeable = |w: &[SeqRange]| {
                    let mut first = w[0];
                    first.extend(&w[1])
                };
                prop_assert!(!ranges.windows(2).any(mergeable));
            }
        }
    }
}
