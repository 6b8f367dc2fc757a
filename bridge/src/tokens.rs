//! Bearer tokens kept in a file, for HTTP ingest and the images page.

use std::path::Path;

use co2_wire::DeviceId;

/// Bearer tokens: `<name> <token>` lines, a name being a device id (ingest)
/// or a viewer's name (the images page); `#` starts a comment.
#[derive(Debug)]
pub struct Tokens(Vec<(Vec<u8>, DeviceId)>);

impl Tokens {
    /// Reads `path`; errors say which line is wrong, never the token.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (device, token) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {}: expected '<device> <token>'", n + 1))?;
            let device = DeviceId::parse(device).map_err(|e| format!("line {}: {e}", n + 1))?;
            let token = token.trim();
            if token.len() < 16 {
                return Err(format!(
                    "line {}: tokens must be at least 16 characters",
                    n + 1
                ));
            }
            tokens.push((token.as_bytes().to_vec(), device));
        }
        Ok(Self(tokens))
    }

    /// The name `token` belongs to. Compares against every token in constant
    /// time per token, so timing does not reveal how much of a guess was right.
    pub fn device_for(&self, token: &str) -> Option<&DeviceId> {
        let mut found = None;
        for (candidate, device) in &self.0 {
            if constant_time_eq(candidate, token.as_bytes()) {
                found = Some(device);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn a_file_of_names_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(
            &path,
            "# viewers\nalice 0123456789abcdef0123\n\nbob   fedcba9876543210fedc \n",
        )
        .unwrap();
        let t = Tokens::load(&path).unwrap();
        assert_eq!(
            t.device_for("0123456789abcdef0123").map(DeviceId::as_str),
            Some("alice")
        );
        assert_eq!(
            t.device_for("fedcba9876543210fedc").map(DeviceId::as_str),
            Some("bob")
        );
        assert_eq!(t.device_for("0123456789abcdef012"), None);
        std::fs::write(&path, "alice short\n").unwrap();
        let err = Tokens::load(&path).unwrap_err();
        assert!(err.contains("line 1") && !err.contains("short"), "{err}");
    }
}
