//! Who may look: viewers with a token from `http.viewer_tokens_file` (a
//! browser sends it as the password of HTTP Basic auth, a script as a bearer
//! token), or anyone. Used by the `/images` page and by `/export`.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::config::{ConfigError, Settings};
use crate::tokens::Tokens;

/// The viewer tokens of `http.viewer_tokens_file`, if it is set.
pub fn tokens(settings: &Settings) -> Result<Option<Tokens>, ConfigError> {
    settings
        .http
        .viewer_tokens_file
        .as_deref()
        .map(|path| {
            Tokens::load(path).map_err(|message| ConfigError::Invalid {
                key: "http.viewer_tokens_file".to_owned(),
                message,
            })
        })
        .transpose()
}

/// Who may see a page.
pub enum Access {
    /// Anyone who reaches the listener.
    Public,
    /// Holders of one of these viewer tokens.
    Viewers(Tokens),
}

impl Access {
    /// `None` when the request may see the page, else the refusal, which
    /// asks a browser for the token under `realm`.
    pub fn refuse(&self, headers: &HeaderMap, realm: &str) -> Option<Response> {
        let Access::Viewers(tokens) = self else {
            return None;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(credential);
        if given.is_some_and(|t| tokens.device_for(&t).is_some()) {
            return None;
        }
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, format!("Basic realm=\"{realm}\""))],
                "a viewer token is required (as the password, or a bearer token)\n",
            )
                .into_response(),
        )
    }
}

/// The token of `Bearer <token>`, or the password of `Basic base64(user:password)`.
fn credential(authorization: &str) -> Option<String> {
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_credentials_come_as_basic_or_bearer() {
        assert_eq!(credential("Bearer abc ").as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("viewer:s3cret:x");
        assert_eq!(
            credential(&format!("Basic {basic}")).as_deref(),
            Some("s3cret:x")
        );
        assert_eq!(credential("Basic !!!"), None);
        assert_eq!(credential("Digest x"), None);
    }
}
