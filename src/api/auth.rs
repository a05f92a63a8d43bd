//! Bearer-token authentication, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The accepted token, kept only as its digest.
#[derive(Clone)]
pub struct BearerToken(Arc<[u8; 32]>);

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self(Arc::new(Sha256::digest(token.as_bytes()).into()))
    }

    /// A key for `purpose` derived from the token (the console's session
    /// signing key): changing the token changes it.
    pub fn derive_key(&self, purpose: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(purpose);
        hasher.update(self.0.as_slice());
        hasher.finalize().into()
    }

    /// Compares digests, so neither the token's length nor the position of the
    /// first differing byte shows in the time taken.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&presented).into()
    }
}

/// Rejects requests without the right `Authorization: Bearer` token.
pub async fn require_token(
    State(token): State<Option<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let presented = header.and_then(|value| {
        let (scheme, credentials) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| credentials.trim())
    });
    match presented {
        None if header.is_none() => {
            ApiError::unauthorized("missing Authorization: Bearer <token> header").into_response()
        }
        None => {
            ApiError::unauthorized("the Authorization header is not a Bearer token").into_response()
        }
        Some(presented) if token.matches(presented) => next.run(request).await,
        Some(_) => ApiError::unauthorized("invalid bearer token").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = BearerToken::new("s3cret-token-value");
        assert!(token.matches("s3cret-token-value"));
        assert!(!token.matches("s3cret-token-valu"));
        assert!(!token.matches("s3cret-token-value "));
        assert!(!token.matches(""));
    }
}
