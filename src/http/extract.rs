//! Extractors whose every rejection is an [`ApiError`] in the contract's shape:
//! JSON bodies (`invalid_json` vs `validation_failed` vs 413), bearer auth, ids
//! in paths (a malformed id names nothing: 404) and query strings.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::{ApiError, HttpState};
use crate::auth::TokenError;
use crate::domain::{ErrorCode, ThreadId, User};

/// A JSON body. The content type is not required (curl users forget it); an
/// empty body counts as `{}`, so a missing field is named in the error.
pub(crate) struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
            } else {
                ApiError::new(ErrorCode::InvalidJson, format!("cannot read the request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON document, telling malformed JSON from well-formed JSON of the wrong shape.
///
/// # Errors
/// `invalid_json` for malformed text; `validation_failed` for missing, unknown or mistyped fields.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    // serde would read a struct from an array too; the contract's bodies are objects.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => ApiError::new(ErrorCode::ValidationFailed, "the body must be a JSON object"),
            Err(e) => ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {e}")),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::new(ErrorCode::ValidationFailed, e.to_string()),
        _ => ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {e}")),
    })
}

/// The signed-in user of a request with `Authorization: Bearer <access token>`.
pub(crate) struct AuthUser(pub User);

impl FromRequestParts<HttpState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) else {
            return Err(ApiError::new(ErrorCode::Unauthorized, "sign in: send Authorization: Bearer <access token>"));
        };
        Ok(Self(state.chat.authenticate(&state.keys, state.host_keys.as_deref(), token.trim()).await?.0))
    }
}

pub(crate) fn token_error(e: TokenError) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, e.to_string())
}

/// The one parameter of a route's path, as text; a path without it names nothing
/// (`what` is not found).
pub(crate) async fn path_text<S: Send + Sync>(parts: &mut Parts, state: &S, what: &str) -> Result<String, ApiError> {
    let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::new(ErrorCode::NotFound, what))?;
    Ok(raw)
}

/// An integer id in a path; anything else is a path that names nothing.
pub(crate) struct IdPath(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_text(parts, state, "not found")
            .await?
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "not found"))
    }
}

/// A thread id in a path.
pub(crate) struct ThreadPath(pub ThreadId);

impl<S: Send + Sync> FromRequestParts<S> for ThreadPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = path_text(parts, state, "thread not found").await?;
        ThreadId::parse(&raw).map(Self).ok_or_else(|| ApiError::new(ErrorCode::NotFound, "thread not found"))
    }
}

/// A query string; a malformed one is `validation_failed`.
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))
    }
}

/// Amounts as the original clients send them: a JSON number or a numeric string.
pub(crate) mod flexible_amount {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Num(f64),
        Str(String),
    }

    /// # Errors
    /// Anything but a number or a string of one.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrString::deserialize(d)? {
            NumOrString::Num(n) => Ok(n),
            NumOrString::Str(s) => s.trim().parse().map_err(|_| D::Error::custom("expected a number")),
        }
    }
}

/// The client's address, for the limits on sign-in attempts and sockets: the TCP
/// peer, or the last `X-Forwarded-For` entry (the one the proxy appended) when the
/// deployment says a proxy sets it and the request comes from a loopback or private
/// address, where a proxy sits; a client that reaches the port from outside cannot
/// name its own address.
pub(crate) struct ClientAddr(pub std::net::IpAddr);

/// Whether the deployment says a proxy sets `X-Forwarded-For`
/// (`--trust-forwarded-for`): all that [`ClientAddr`] needs of a router's state,
/// so routes over another state (the WebSocket's) can take a `ClientAddr` too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrustForwardedFor(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr
where
    TrustForwardedFor: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        if TrustForwardedFor::from_ref(state).0 && peer.is_some_and(is_internal) {
            // Only the last entry: the ones before it are whatever the client sent.
            let last = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|a| a.trim().parse().ok());
            if let Some(ip) = last {
                return Ok(Self(ip));
            }
        }
        peer.map(Self).ok_or_else(|| {
            ApiError(crate::chat::Error::Internal("the server was started without connection info".into()))
        })
    }
}

/// Loopback and private addresses (RFC 1918, IPv6 unique local): where a proxy in
/// front of the server connects from.
fn is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_and_private_peers_may_name_the_client() {
        for internal in ["127.0.0.1", "10.1.2.3", "192.168.0.9", "172.16.0.1", "::1", "fd00::1", "::ffff:10.0.0.1"] {
            assert!(super::is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["203.0.113.7", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!super::is_internal(public.parse().unwrap()), "{public}");
        }
    }
}
