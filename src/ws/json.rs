//! The contract's Message written as JSON by hand, byte for byte what serde's
//! derive writes through serde_json (the tests compare the two).
//!
//! Written here because every message is written once per node into its frames,
//! and serde_json escapes every string it writes one byte at a time, field names,
//! ids and the timestamp included: that was 16% of the Tokio worker's instructions
//! in a closed loop (`scripts/bench/instructions.sh`; `docs/benchmarks.md`,
//! 2026-12-07, twelfth session). Here the names and the ids, which never need
//! escaping, are copied as they are, and the strings a person chose are scanned
//! eight bytes at a time.

use crate::domain::{Message, UserRef};

/// Appends `message` as JSON.
pub(crate) fn push_message(out: &mut String, message: &Message) {
    let mut uuid = uuid::Uuid::encode_buffer();
    let mut number = itoa::Buffer::new();
    out.push_str(r#"{"id":""#);
    out.push_str(message.id.0.as_hyphenated().encode_lower(&mut uuid));
    out.push_str(r#"","thread_id":""#);
    out.push_str(message.thread_id.0.as_hyphenated().encode_lower(&mut uuid));
    out.push_str(r#"","seq":"#);
    out.push_str(number.format(message.seq.0));
    out.push_str(r#","kind":""#);
    out.push_str(message.kind.as_str());
    out.push_str(r#"","sender":"#);
    push_user(out, message.sender.as_ref());
    out.push_str(r#","recipient":"#);
    push_user(out, message.recipient.as_ref());
    out.push_str(r#","text":"#);
    push_str(out, &message.text);
    out.push_str(r#","metadata":"#);
    match &message.metadata {
        serde_json::Value::Object(map) if map.is_empty() => out.push_str("{}"),
        // A `Value` has string keys only, so it always serializes.
        other => out.push_str(&other.to_string()),
    }
    out.push_str(r#","timestamp":""#);
    message.timestamp.push_rfc3339(out);
    out.push_str(r#"","is_read":"#);
    out.push_str(if message.is_read { "true" } else { "false" });
    out.push_str(r#","client_msg_id":"#);
    match &message.client_msg_id {
        Some(key) => push_str(out, key),
        None => out.push_str("null"),
    }
    out.push('}');
}

fn push_user(out: &mut String, user: Option<&UserRef>) {
    let Some(user) = user else { return out.push_str("null") };
    out.push_str(r#"{"id":"#);
    out.push_str(itoa::Buffer::new().format(user.id.0));
    out.push_str(r#","username":"#);
    push_str(out, &user.username);
    out.push_str(r#","full_name":"#);
    push_str(out, &user.full_name);
    out.push('}');
}

/// Appends `s` as a JSON string, escaped as serde_json escapes: `"` and `\` with a
/// backslash, the control characters `\b \t \n \f \r` by name and the others as
/// `\u00xx`; everything else, DEL and `/` included, as it is.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut run = 0;
    while let Some(at) = next_escape(s.as_bytes(), run) {
        // Every byte escaped is ASCII, so the runs between them are whole characters.
        out.push_str(&s[run..at]);
        let byte = s.as_bytes()[at];
        match escape(byte) {
            Some(named) => out.push_str(named),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        run = at + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// How long `s` is as a JSON string ([`push_str`]), quotes included: a frame's
/// buffer is made to its exact size, so that it becomes the frame without a copy
/// or a header of its own.
pub(crate) fn str_len(s: &str) -> usize {
    let mut len = s.len() + 2;
    let mut from = 0;
    while let Some(at) = next_escape(s.as_bytes(), from) {
        len += escape(s.as_bytes()[at]).map_or(5, |named| named.len() - 1);
        from = at + 1;
    }
    len
}

/// The escape of a byte that needs one, when it has a short one (`None`: `\u00xx`).
fn escape(byte: u8) -> Option<&'static str> {
    Some(match byte {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\x08' => "\\b",
        b'\t' => "\\t",
        b'\n' => "\\n",
        b'\x0c' => "\\f",
        b'\r' => "\\r",
        _ => return None,
    })
}

/// The first byte at or after `from` that needs escaping.
fn next_escape(bytes: &[u8], mut from: usize) -> Option<usize> {
    while from < bytes.len() {
        // Eight bytes with nothing to escape are passed over at once.
        if let Some(word) = bytes.get(from..from + 8)
            && let Ok(word) = <[u8; 8]>::try_from(word)
            && !needs_escape(u64::from_le_bytes(word))
        {
            from += 8;
            continue;
        }
        let byte = bytes[from];
        if byte < 0x20 || byte == b'"' || byte == b'\\' {
            return Some(from);
        }
        from += 1;
    }
    None
}

/// Whether any of the eight bytes is `"`, `\` or below 0x20 (the classic bit tricks:
/// a byte is zero, or less than n, exactly when its high bit survives the mask).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (below_space | zero_byte(word ^ (ONES * u64::from(b'"'))) | zero_byte(word ^ (ONES * u64::from(b'\\')))) != 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{MessageId, MessageKind, Seq, ThreadId, Timestamp, UserId};

    fn written(s: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, s);
        assert_eq!(str_len(s), out.len(), "{s:?}");
        out
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for byte in 0..0x80u8 {
            let c = char::from(byte);
            for s in [c.to_string(), format!("ab{c}"), format!("abcdefg{c}xyz"), format!("{c}abcdefghijklmnop{c}")] {
                assert_eq!(written(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
            }
        }
        let samples = [
            "",
            "plain words and more plain words",
            "line\nbreak \"quoted\" </script> \\ back\\slash",
            "\u{e9}t\u{e9} \u{1F600} \u{7f}\u{80}\u{ffff} \u{1f}\u{0}",
            "12345678\"12345678\\12345678\n",
            "\u{1F600}\u{1F600}\u{1F600}\"\u{e9}",
        ];
        for s in samples {
            assert_eq!(written(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        // Every position of an escape against the eight-byte steps.
        for len in 0..20 {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'x' }).collect();
                    assert_eq!(written(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn needs_escape_sees_exactly_the_bytes_that_need_it() {
        for byte in 0..=u8::MAX {
            let must = byte < 0x20 || byte == b'"' || byte == b'\\';
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = byte;
                assert_eq!(needs_escape(u64::from_le_bytes(word)), must, "{byte:#x} at {at}");
            }
            assert_eq!(needs_escape(u64::from_le_bytes([byte; 8])), must, "{byte:#x} everywhere");
        }
        // Words of mixed bytes, where a borrow between bytes could mislead the tricks.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let must = x.to_le_bytes().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(needs_escape(x), must, "{x:#018x}");
        }
    }

    fn user(id: i64, name: &str) -> UserRef {
        UserRef { id: UserId(id), username: format!("u{id}").into(), full_name: name.into() }
    }

    #[test]
    fn messages_are_written_as_serde_writes_them() {
        let message = |sender: Option<UserRef>,
                       recipient: Option<UserRef>,
                       text: &str,
                       key: Option<&str>,
                       metadata: serde_json::Value,
                       millis: i64| Message {
            id: MessageId::generate(),
            thread_id: ThreadId::generate(),
            seq: Seq(9_007_199_254_740_993),
            kind: if sender.is_some() { MessageKind::User } else { MessageKind::System },
            sender,
            recipient,
            text: text.to_owned(),
            metadata,
            timestamp: Timestamp::from_millis(millis).unwrap(),
            is_read: key.is_none(),
            client_msg_id: key.map(Arc::from),
        };
        let messages = [
            message(
                Some(user(1, "Ünïcode \"1\"")),
                Some(user(-2, "")),
                "line\nbreak \"quoted\" \u{1F600} \u{7}",
                Some("k \"1\""),
                serde_json::json!({}),
                1_765_000_000_123,
            ),
            message(
                None,
                None,
                "Ann hired Bob",
                None,
                serde_json::json!({"event": "hired", "job": {"id": 3, "title": "a \"b\""}, "n": [1.5, null]}),
                0,
            ),
            // Timestamps past year 9999 and before year 0 are written another way.
            message(Some(user(3, "c")), None, "", Some(""), serde_json::json!({}), 253_402_300_800_000),
            message(Some(user(3, "c")), None, "x", Some("plain-1"), serde_json::json!({}), -62_167_219_200_001),
        ];
        for m in &messages {
            let mut out = String::new();
            push_message(&mut out, m);
            assert_eq!(out, serde_json::to_string(m).unwrap());
        }
    }
}
