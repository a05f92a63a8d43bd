//! Console sessions: a login form takes the API token and sets an HTTP-only,
//! SameSite=Strict cookie holding a signed session (no server-side state, so
//! every API replica with the same token accepts it, and changing the token
//! ends every session). Each session has its own CSRF token, which every
//! form posts back.
//!
//! The signing key is derived from the token's digest; without a token (the
//! insecure development mode) it is random per process and every request
//! counts as logged in.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ConsoleState;
use crate::api::auth::BearerToken;

/// A posted form's CSRF token is not its session's.
#[derive(Debug, thiserror::Error)]
#[error("the form's CSRF token does not match this session; reload the page and try again")]
pub struct CsrfMismatch;

/// The session cookie's name.
pub const COOKIE: &str = "console_session";
/// How long a login lasts.
pub const SESSION_LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// Issues and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    key: Arc<[u8; 32]>,
    /// No token is configured: every request is let in.
    open: bool,
}

/// A request's session: what its CSRF token is derived from.
#[derive(Clone, Debug)]
pub struct Session {
    nonce: String,
}

impl Sessions {
    pub fn new(token: Option<&BearerToken>) -> Self {
        match token {
            Some(token) => Self {
                key: Arc::new(token.derive_key(b"notification-scheduler console session")),
                open: false,
            },
            None => {
                let mut key = [0u8; 32];
                key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                Self {
                    key: Arc::new(key),
                    open: true,
                }
            }
        }
    }

    /// Whether the console is served without a login.
    pub fn open(&self) -> bool {
        self.open
    }

    fn mac(&self, purpose: &str, parts: &[&str]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_slice())
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        for part in parts {
            mac.update(b"\0");
            mac.update(part.as_bytes());
        }
        hex(&mac.finalize().into_bytes())
    }

    /// A new session's cookie value, valid until `now` + [`SESSION_LIFETIME`].
    pub fn issue(&self, now: DateTime<Utc>) -> String {
        let expires = (now + SESSION_LIFETIME).timestamp().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mac = self.mac("session", &[&expires, &nonce]);
        format!("{expires}.{nonce}.{mac}")
    }

    /// The session a cookie value holds, if it is ours and not expired.
    pub fn verify(&self, value: &str, now: DateTime<Utc>) -> Option<Session> {
        let mut parts = value.split('.');
        let (expires, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let expected = self.mac("session", &[expires, nonce]);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        (expires.parse::<i64>().ok()? > now.timestamp()).then(|| Session {
            nonce: nonce.to_owned(),
        })
    }

    /// The CSRF token of `session`, for its forms.
    pub fn csrf(&self, session: &Session) -> String {
        self.mac("csrf", &[&session.nonce])
    }

    /// Checks a posted CSRF token against the session's.
    pub fn check_csrf(&self, session: &Session, presented: &str) -> Result<(), CsrfMismatch> {
        let expected = self.csrf(session);
        if bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(CsrfMismatch)
        }
    }

    /// The session of an open console (no token).
    fn anonymous() -> Session {
        Session {
            nonce: "open".to_owned(),
        }
    }
}

/// The `Set-Cookie` value for a session (`value`), or one ending it (`None`).
pub fn cookie(value: Option<String>) -> HeaderValue {
    let ending = value.is_none();
    let mut cookie = Cookie::build((COOKIE, value.unwrap_or_default()))
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict);
    cookie = if ending {
        cookie.max_age(cookie::time::Duration::ZERO)
    } else {
        cookie.max_age(cookie::time::Duration::seconds(
            SESSION_LIFETIME.num_seconds(),
        ))
    };
    HeaderValue::from_str(&cookie.build().to_string()).expect("a cookie is a valid header value")
}

/// Lets requests with a valid session through (adding the [`Session`] to the
/// request); sends the others to the login form, back to where they were.
pub async fn require_session(
    State(state): State<ConsoleState>,
    mut request: Request,
    next: Next,
) -> Response {
    let sessions = &state.sessions;
    let session = if sessions.open() {
        Some(Sessions::anonymous())
    } else {
        session_cookie(&request).and_then(|value| sessions.verify(&value, Utc::now()))
    };
    match session {
        Some(session) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        None => {
            let back = request
                .uri()
                .path_and_query()
                .map_or("/console", |path| path.as_str());
            let target = format!(
                "/console/login?next={}",
                url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
            );
            Redirect::to(&target).into_response()
        }
    }
}

fn session_cookie(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == COOKIE)
        .map(|cookie| cookie.value().to_owned())
}

/// Where a login may send the browser back to: a console page, nothing else
/// (an open redirect would let a link log someone in and send them away).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if (next == "/console"
                || next.starts_with("/console/")
                || next.starts_with("/console?"))
                && !next.contains("//")
                && !next.contains('\\') =>
        {
            next
        }
        _ => "/console",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_verifies_until_it_expires_and_only_with_its_key() {
        let token = BearerToken::new("token-one");
        let sessions = Sessions::new(Some(&token));
        let now = Utc::now();
        let value = sessions.issue(now);
        assert!(sessions.verify(&value, now).is_some());
        assert!(
            sessions
                .verify(
                    &value,
                    now + SESSION_LIFETIME + chrono::Duration::seconds(1)
                )
                .is_none()
        );
        let other = Sessions::new(Some(&BearerToken::new("token-two")));
        assert!(other.verify(&value, now).is_none());
        let mut forged = value.clone();
        forged.replace_range(0..1, "9");
        assert!(sessions.verify(&forged, now).is_none());
        assert!(sessions.verify("", now).is_none());
        assert!(sessions.verify("1.2.3.4", now).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let sessions = Sessions::new(Some(&BearerToken::new("token")));
        let now = Utc::now();
        let one = sessions.verify(&sessions.issue(now), now).unwrap();
        let two = sessions.verify(&sessions.issue(now), now).unwrap();
        assert!(sessions.check_csrf(&one, &sessions.csrf(&one)).is_ok());
        assert!(sessions.check_csrf(&one, &sessions.csrf(&two)).is_err());
        assert!(sessions.check_csrf(&one, "").is_err());
    }

    #[test]
    fn only_console_pages_are_returned_to_after_login() {
        assert_eq!(
            safe_next(Some("/console/upcoming?kind=reminder")),
            "/console/upcoming?kind=reminder"
        );
        assert_eq!(safe_next(Some("/console?x=1")), "/console?x=1");
        for outside in [
            "https://evil.example/",
            "//evil.example/console",
            "/consolex",
            "/console//evil",
            "/console/\\evil",
            "/games",
        ] {
            assert_eq!(safe_next(Some(outside)), "/console", "{outside}");
        }
        assert_eq!(safe_next(None), "/console");
    }
}
