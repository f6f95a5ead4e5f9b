//! The WebSocket frames of the contract. Client frames are read into one flat
//! struct (fast, and its `client_msg_id` survives a missing field so the error can
//! echo it); server frames are serialized once per event and shared by every
//! connection that receives them.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::domain::{ErrorCode, Message, Seq, ThreadId, User, UserId, flexible_id};

/// A client frame as sent; which fields matter depends on `type`. Unknown fields
/// are ignored, so clients of the original system that send extra keys still work.
/// `type`, `thread_id` and `client_msg_id` borrow from the frame's text unless
/// they hold escapes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFrame<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "borrowed")]
    pub(crate) kind: Option<Cow<'a, str>>,
    pub(crate) token: Option<String>,
    #[serde(default, deserialize_with = "flexible_id::deserialize_option")]
    pub(crate) recipient_id: Option<i64>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub(crate) thread_id: Option<Cow<'a, str>>,
    pub(crate) text: Option<String>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub(crate) client_msg_id: Option<Cow<'a, str>>,
    pub(crate) up_to_seq: Option<i64>,
    pub(crate) threads: Option<HashMap<String, i64>>,
}

/// A string that borrows when it can: serde's `Cow` borrows only as a field of its
/// own marked `borrow`, never inside an `Option`.
fn borrowed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(d)?.map(|b| b.0))
}

/// Why a frame could not be read: the code and detail of its `error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError {
    pub(crate) code: ErrorCode,
    pub(crate) detail: String,
    pub(crate) client_msg_id: Option<String>,
}

/// Reads a text frame, telling malformed JSON from JSON of the wrong shape.
pub(crate) fn parse(text: &str) -> Result<RawFrame<'_>, FrameError> {
    match serde_json::from_str::<RawFrame<'_>>(text) {
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

/// A message's JSON, written once for both frames that carry it: a sent message's
/// `new_message` and its `message_ack` hold the same object, and writing it (its
/// strings escaped) was about a tenth of the Tokio worker's time, paid twice.
pub(crate) struct MessageJson(String);

/// About what a message's JSON takes besides its text (ids, names, timestamp).
const MESSAGE_FIELDS_BYTES: usize = 512;

impl MessageJson {
    pub(crate) fn new(message: &Message) -> Self {
        let mut json = String::with_capacity(MESSAGE_FIELDS_BYTES + message.text.len());
        super::json::push_message(&mut json, message);
        Self(json)
    }

    /// `{"type":"<kind>"`, then `"client_msg_id":<key>` when the frame has the field
    /// (`key` is `Some`; `null` for `Some(None)`), then `"message":<the message>}`, in
    /// one buffer: byte for byte what serializing a struct of those fields writes.
    fn frame(&self, kind: &str, key: Option<Option<&str>>) -> Utf8Bytes {
        const TYPE: &str = r#"{"type":""#;
        const KEY: &str = r#","client_msg_id":"#;
        const MESSAGE: &str = r#","message":"#;
        let key_len = match key {
            None => 0,
            Some(None) => KEY.len() + "null".len(),
            Some(Some(key)) => KEY.len() + super::json::str_len(key),
        };
        // Exactly the frame's length: a `String` with room to spare becomes a frame
        // through one more allocation (the buffer's own header).
        let mut out = String::with_capacity(TYPE.len() + kind.len() + 1 + key_len + MESSAGE.len() + self.0.len() + 1);
        out.push_str(TYPE);
        out.push_str(kind);
        out.push('"');
        match key {
            None => {}
            Some(None) => {
                out.push_str(KEY);
                out.push_str("null");
            }
            Some(Some(key)) => {
                out.push_str(KEY);
                super::json::push_str(&mut out, key);
            }
        }
        out.push_str(MESSAGE);
        out.push_str(&self.0);
        out.push('}');
        debug_assert_eq!(out.len(), out.capacity(), "a frame's buffer is made to its size");
        out.into()
    }
}

pub(crate) fn new_message(message: &Message) -> Utf8Bytes {
    new_message_of(&MessageJson::new(message))
}

pub(crate) fn new_message_of(message: &MessageJson) -> Utf8Bytes {
    message.frame("new_message", None)
}

pub(crate) fn message_ack(client_msg_id: Option<&str>, message: &Message) -> Utf8Bytes {
    message_ack_of(client_msg_id, &MessageJson::new(message))
}

pub(crate) fn message_ack_of(client_msg_id: Option<&str>, message: &MessageJson) -> Utf8Bytes {
    message.frame("message_ack", Some(client_msg_id))
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
        assert!(matches!(ok.kind, Some(Cow::Borrowed(_))), "a plain type borrows from the frame");
        let escaped = parse(r#"{"type":"mess\u0061ge","thread_id":"t\"1","client_msg_id":"k\u0031"}"#).unwrap();
        let fields = (escaped.kind.as_deref(), escaped.thread_id.as_deref(), escaped.client_msg_id.as_deref());
        assert_eq!(fields, (Some("message"), Some("t\"1"), Some("k1")));
        assert_eq!(parse(r#"{"type":null}"#).unwrap().kind, None);
    }

    #[test]
    fn a_frame_that_cannot_be_serialized_becomes_an_internal_error() {
        let unserializable = HashMap::from([((1, 2), "a map with non-string keys")]);
        assert_eq!(text(&unserializable).as_str(), INTERNAL_ERROR);
        let frame: serde_json::Value = serde_json::from_str(INTERNAL_ERROR).unwrap();
        assert_eq!(frame["error"], serde_json::to_value(ErrorCode::Internal).unwrap());
    }

    /// What the message frames were before they shared one serialization.
    #[derive(Serialize)]
    struct Derived<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<Option<&'a str>>,
        message: &'a Message,
    }

    #[test]
    fn message_frames_are_what_their_structs_serialize_to() {
        use crate::domain::{MessageRecord, Role};
        let user = |id: i64, role| User {
            id: UserId(id),
            username: format!("u{id}"),
            full_name: format!("Ünïcode \"{id}\""),
            role,
            external_id: None,
        };
        let users = [user(1, Role::Client), user(2, Role::Freelancer)];
        let text = "line\nbreak \"quoted\" </script> \u{1F600} \u{7}".to_owned();
        let record = MessageRecord::user(ThreadId::generate(), Seq(7), UserId(1), text, Some("k \"1\"".into()));
        let message = Message::fresh(record, &users);
        let derived = |kind, client_msg_id| serde_json::to_string(&Derived { kind, client_msg_id, message: &message });

        assert_eq!(new_message(&message).as_str(), derived("new_message", None).unwrap());
        let json = MessageJson::new(&message);
        assert_eq!(new_message_of(&json).as_str(), derived("new_message", None).unwrap());
        for key in [Some("k \"1\""), Some("k\\\u{1}"), Some("plain-1 \u{e9}\u{7f}"), Some(""), None] {
            assert_eq!(message_ack_of(key, &json).as_str(), derived("message_ack", Some(key)).unwrap());
            assert_eq!(message_ack(key, &message).as_str(), derived("message_ack", Some(key)).unwrap());
        }
    }

    #[test]
    fn error_frames_omit_an_absent_client_msg_id() {
        assert_eq!(
            error(ErrorCode::NotFound, "thread not found", None).as_str(),
            r#"{"type":"error","error":"not_found","detail":"thread not found"}"#
        );
    }
}
