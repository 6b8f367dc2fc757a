//! Device events as the queue carries them: what an announcement may say.

/// An error text cut to what an announcement carries (events are bounded in size).
pub(crate) fn short(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(short("disk full"), "disk full");
        let long = "é".repeat(400);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), 303);
        assert!(cut.ends_with("..."));
    }
}
