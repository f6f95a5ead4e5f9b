//! The WebSocket frames of the contract. Client frames are read into one flat
//! struct (fast, and its `client_msg_id` survives a missing field so the error can
//! echo it); server frames are serialized once per event and shared by every
//! connection that receives them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::domain::{ErrorCode, Message, Seq, ThreadId, User, UserId, flexible_id};

/// A client frame as sent; which fields matter depends on `type`. Unknown fields
/// are ignored, so clients of the original system that send extra keys still work.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFrame {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) token: Option<String>,
    #[serde(default, deserialize_with = "flexible_id::deserialize_option")]
    pub(crate) recipient_id: Option<i64>,
    pub(crate) thread_id: Option<String>,
    pub(crate) text: Option<String>,
    pub(crate) client_msg_id: Option<String>,
    pub(crate) up_to_seq: Option<i64>,
    pub(crate) threads: Option<HashMap<String, i64>>,
}

/// Why a frame could not be read: the code and detail of its `error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError {
    pub(crate) code: ErrorCode,
    pub(crate) detail: String,
    pub(crate) client_msg_id: Option<String>,
}

/// Reads a text frame, telling malformed JSON from JSON of the wrong shape.
pub(crate) fn parse(text: &str) -> Result<RawFrame, FrameError> {
    match serde_json::from_str::<RawFrame>(text) {
        Ok(frame) => Ok(frame),
        Err(e) => {
            // Slow path: find out what kind of error it is, and rescue the key.
            let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
                return Err(FrameError {
                    code: ErrorCode::InvalidJson,
                    detail: format!("the frame is not valid JSON: {e}"),
                    client_msg_id: None,
                });
            };
            let client_msg_id = value.get("client_msg_id").and_then(|v| v.as_str()).map(str::to_owned);
            let detail = if value.is_object() { e.to_string() } else { "a frame must be a JSON object".to_owned() };
            Err(FrameError { code: ErrorCode::ValidationFailed, detail, client_msg_id })
        }
    }
}

#[derive(Serialize)]
struct NewMessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a Message,
}

#[derive(Serialize)]
struct AckFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    client_msg_id: Option<&'a str>,
    message: &'a Message,
}

#[derive(Serialize)]
struct TypingFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    thread_id: ThreadId,
    user: &'a User,
}

#[derive(Serialize)]
struct ReadFrame {
    #[serde(rename = "type")]
    kind: &'static str,
    thread_id: ThreadId,
    user_id: UserId,
    up_to_seq: Seq,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorCode,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_msg_id: Option<&'a str>,
}

/// The frame's JSON. Serializing these plain structs does not fail (string keys,
/// no fallible `Serialize`); if a change ever made it, the error is logged and the
/// client gets an `internal` error frame, never an empty or partial one.
fn text<T: Serialize>(frame: &T) -> Utf8Bytes {
    match serde_json::to_string(frame) {
        Ok(json) => json.into(),
        Err(e) => {
            tracing::error!(error = %e, "serializing a WebSocket frame failed; sending an internal error instead");
            Utf8Bytes::from_static(INTERNAL_ERROR)
        }
    }
}

/// What a client gets in place of a frame that could not be written.
const INTERNAL_ERROR: &str = r#"{"type":"error","error":"internal","detail":"internal server error"}"#;

pub(crate) fn new_message(message: &Message) -> Utf8Bytes {
    text(&NewMessageFrame { kind: "new_message", message })
}

pub(crate) fn message_ack(client_msg_id: Option<&str>, message: &Message) -> Utf8Bytes {
    text(&AckFrame { kind: "message_ack", client_msg_id, message })
}

pub(crate) fn typing(thread_id: ThreadId, user: &User) -> Utf8Bytes {
    text(&TypingFrame { kind: "typing", thread_id, user })
}

pub(crate) fn read(thread_id: ThreadId, user_id: UserId, up_to_seq: Seq) -> Utf8Bytes {
    text(&ReadFrame { kind: "read", thread_id, user_id, up_to_seq })
}

pub(crate) fn error(code: ErrorCode, detail: &str, client_msg_id: Option<&str>) -> Utf8Bytes {
    text(&ErrorFrame { kind: "error", error: code, detail, client_msg_id })
}

pub(crate) fn synced() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"type":"synced"}"#)
}

/// The answer to an `auth` frame: the connection now lives until `exp` (unix seconds).
pub(crate) fn authed(exp: i64) -> Utf8Bytes {
    Utf8Bytes::from(format!(r#"{{"type":"authed","exp":{exp}}}"#))
}

pub(crate) fn pong() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"type":"pong"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_classified_and_the_client_msg_id_is_rescued() {
        assert_eq!(parse("{nope").unwrap_err().code, ErrorCode::InvalidJson);
        let wrong = parse(r#"{"type":"message","text":5,"client_msg_id":"c-9"}"#).unwrap_err();
        assert_eq!((wrong.code, wrong.client_msg_id.as_deref()), (ErrorCode::ValidationFailed, Some("c-9")));
        assert_eq!(parse("[1]").unwrap_err().code, ErrorCode::ValidationFailed);
        let ok = parse(r#"{"type":"message","recipient_id":"12","text":"hi","extra":true}"#).unwrap();
        assert_eq!((ok.kind.as_deref(), ok.recipient_id), (Some("message"), Some(12)));
    }

    #[test]
    fn a_frame_that_cannot_be_serialized_becomes_an_internal_error() {
        let unserializable = HashMap::from([((1, 2), "a map with non-string keys")]);
        assert_eq!(text(&unserializable).as_str(), INTERNAL_ERROR);
        let frame: serde_json::Value = serde_json::from_str(INTERNAL_ERROR).unwrap();
        assert_eq!(frame["error"], serde_json::to_value(ErrorCode::Internal).unwrap());
    }

    #[test]
    fn error_frames_omit_an_absent_client_msg_id() {
        assert_eq!(
            error(ErrorCode::NotFound, "thread not found", None).as_str(),
            r#"{"type":"error","error":"not_found","detail":"thread not found"}"#
        );
    }
}
