//! Which numbers of a gap are still missing, and how many an announcement covers.

/// An inclusive range of numbers.
pub type Span = (u64, u64);

/// The spans of `span` whose numbers are not in `present` (sorted).
pub fn missing_spans(span: Span, present: &[u64]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut next = span.0;
    for &n in present.iter().filter(|n| (span.0..=span.1).contains(n)) {
        if n > next {
            out.push((next, n - 1));
        }
        next = next.max(n.saturating_add(1));
    }
    if next <= span.1 {
        out.push((next, span.1));
    }
    out
}

/// How many numbers of `span` some range of `announced` covers (ranges may overlap).
pub fn covered(span: Span, announced: &[Span]) -> u64 {
    let mut clipped: Vec<Span> = announced
        .iter()
        .filter(|(a, b)| *b >= span.0 && *a <= span.1)
        .map(|(a, b)| ((*a).max(span.0), (*b).min(span.1)))
        .collect();
    clipped.sort_unstable();
    let mut total = 0;
    let mut reach = 0u64; // first number not yet counted
    for (a, b) in clipped {
        let start = a.max(reach);
        if b >= start {
            total += b - start + 1;
            reach = b + 1;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_numbers_are_what_the_present_ones_leave() {
        assert_eq!(missing_spans((5, 10), &[]), [(5, 10)]);
        assert_eq!(missing_spans((5, 10), &[5, 6, 7, 8, 9, 10]), []);
        assert_eq!(missing_spans((5, 10), &[7]), [(5, 6), (8, 10)]);
        assert_eq!(missing_spans((5, 10), &[5, 10]), [(6, 9)]);
        assert_eq!(missing_spans((5, 10), &[1, 6, 6, 99]), [(5, 5), (7, 10)]);
    }

    #[test]
    fn announced_numbers_are_counted_once_even_when_announcements_overlap() {
        assert_eq!(covered((1, 35), &[(1, 35)]), 35);
        assert_eq!(covered((10, 20), &[(1, 12), (11, 15), (30, 40)]), 6);
        assert_eq!(covered((10, 20), &[(21, 30)]), 0);
        assert_eq!(covered((10, 20), &[(5, 25)]), 11);
    }
}
