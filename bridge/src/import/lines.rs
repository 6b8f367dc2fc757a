//! The lines of an input with bounded memory: a UTF-8 byte order mark
//! before the first line is dropped, a line ends at LF with an optional CR
//! before it, and a line longer than the bound is read past (never held
//! whole: a 10 MB line costs the bound, not 10 MB) and reported with its
//! first bytes, its length and its number, so the import dead-letters it
//! and goes on.

use std::io::{self, BufRead};

/// The UTF-8 byte order mark some editors and spreadsheets write first.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes kept beyond the bound: a BOM (3) and a CR (1).
const SLACK: usize = 4;

/// One line of the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line within the bound, without its line end.
    Text {
        /// Its number, from 1.
        number: u64,
        /// Its bytes.
        bytes: &'a [u8],
    },
    /// A line over the bound: what was kept of it.
    TooLong {
        /// Its number, from 1.
        number: u64,
        /// Its first bytes (the bound's worth).
        start: &'a [u8],
        /// Its length in bytes, without its line end.
        len: u64,
    },
}

impl Line<'_> {
    /// The line's number, from 1.
    pub fn number(&self) -> u64 {
        match self {
            Line::Text { number, .. } | Line::TooLong { number, .. } => *number,
        }
    }
}

/// Reads lines of at most `max` bytes from a buffered reader.
pub struct Lines<R> {
    inner: R,
    max: usize,
    /// The current line, up to `max` bytes and [`SLACK`] more (a BOM
    /// before it and a CR after it still fit).
    buf: Vec<u8>,
    number: u64,
    /// Bytes consumed from the input so far.
    position: u64,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `inner`, each at most `max` bytes (at least 1).
    pub fn new(inner: R, max: usize) -> Self {
        let max = max.max(1);
        Self {
            inner,
            max,
            buf: Vec::with_capacity(max.min(1 << 16) + SLACK),
            number: 0,
            position: 0,
        }
    }

    /// Bytes of the input read so far (for progress against its size).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next line; `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let keep = self.max + SLACK;
        let (mut len, mut ended, mut any) = (0u64, false, false);
        let mut last = None;
        while !ended {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let (piece, used) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    ended = true;
                    (available.get(..i).unwrap_or_default(), i + 1)
                }
                None => (available, available.len()),
            };
            let room = keep.saturating_sub(self.buf.len());
            self.buf
                .extend_from_slice(piece.get(..room.min(piece.len())).unwrap_or_default());
            len += piece.len() as u64;
            last = piece.last().copied().or(last);
            self.inner.consume(used);
            self.position += used as u64;
        }
        if !any {
            return Ok(None);
        }
        self.number += 1;
        // A CR before the LF (or the end) is the line end, not the line's.
        if last == Some(b'\r') {
            if len == self.buf.len() as u64 {
                self.buf.pop();
            }
            len -= 1;
        }
        let mut start = 0;
        if self.number == 1 && self.buf.starts_with(BOM) {
            start = BOM.len();
            len -= BOM.len() as u64;
        }
        let kept = self.buf.get(start..).unwrap_or_default();
        Ok(Some(if len > self.max as u64 {
            Line::TooLong {
                number: self.number,
                start: kept.get(..self.max).unwrap_or(kept),
                len,
            }
        } else {
            Line::Text {
                number: self.number,
                bytes: kept,
            }
        }))
    }
}

/// True for a line of nothing but spaces and tabs (skipped, not refused).
pub fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A line as the tests compare it: Ok(bytes) or Err((start, len)).
    type Got = Result<Vec<u8>, (Vec<u8>, u64)>;

    /// Every line of `input` read with bound `max` through a buffer of
    /// `capacity` bytes, as (number, line).
    fn read(input: &[u8], max: usize, capacity: usize) -> Vec<(u64, Got)> {
        let mut lines = Lines::new(io::BufReader::with_capacity(capacity, input), max);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            out.push(match line {
                Line::Text { number, bytes } => (number, Ok(bytes.to_vec())),
                Line::TooLong { number, start, len } => (number, Err((start.to_vec(), len))),
            });
        }
        assert_eq!(lines.position(), input.len() as u64);
        out
    }

    #[test]
    fn bom_crlf_and_a_last_line_without_an_end() {
        let got = read(b"\xEF\xBB\xBFa,b\r\n\r\n1|2\nlast", 100, 4);
        assert_eq!(
            got,
            vec![
                (1, Ok(b"a,b".to_vec())),
                (2, Ok(Vec::new())),
                (3, Ok(b"1|2".to_vec())),
                (4, Ok(b"last".to_vec())),
            ]
        );
        assert!(read(b"", 10, 4).is_empty());
        assert_eq!(read(b"\n", 10, 4), vec![(1, Ok(Vec::new()))]);
    }

    #[test]
    fn a_long_line_is_read_past_with_its_start_and_length() {
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000_000));
        input.extend_from_slice(b"\r\nafter\n");
        let got = read(&input, 64, 8192);
        assert_eq!(got[0], (1, Ok(b"ok".to_vec())));
        assert_eq!(got[1], (2, Err((vec![b'x'; 64], 10_000_000))));
        assert_eq!(got[2], (3, Ok(b"after".to_vec())));
        // Exactly the bound, with a CR: within it.
        assert_eq!(read(b"abcd\r\n", 4, 2), vec![(1, Ok(b"abcd".to_vec()))]);
        assert_eq!(
            read(b"abcde\n", 4, 2),
            vec![(1, Err((b"abcd".to_vec(), 5)))]
        );
    }

    #[test]
    fn blank_lines() {
        assert!(is_blank(b""));
        assert!(is_blank(b" \t "));
        assert!(!is_blank(b" x"));
    }

    proptest! {
        /// Any bytes: no panic, numbers 1, 2, 3…, every line as splitting
        /// on LF says (CR and the first line's BOM removed), none over the bound.
        #[test]
        fn lines_are_the_input_split_at_lf(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(0xEF), Just(0xBB), Just(0xBF), any::<u8>()],
                0..400,
            ),
            max in 1usize..40,
            capacity in 1usize..17,
        ) {
            let got = read(&input, max, capacity);
            let mut expected: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
            if input.last() == Some(&b'\n') || input.is_empty() {
                expected.pop();
            }
            prop_assert_eq!(got.len(), expected.len());
            for (i, ((number, line), want)) in got.iter().zip(expected).enumerate() {
                prop_assert_eq!(*number, i as u64 + 1);
                let mut want = want;
                if i == 0 {
                    want = want.strip_prefix(BOM).unwrap_or(want);
                }
                let trimmed = want.strip_suffix(b"\r").unwrap_or(want);
                match line {
                    Ok(bytes) => {
                        prop_assert!(bytes.len() <= max);
                        prop_assert_eq!(bytes.as_slice(), trimmed);
                    }
                    Err((start, len)) => {
                        prop_assert_eq!(start.len(), max);
                        prop_assert_eq!(*len, trimmed.len() as u64);
                        prop_assert!(*len > max as u64);
                        prop_assert!(trimmed.starts_with(start));
                    }
                }
            }
        }
    }
}
