//! The close codes this server ends a WebSocket with, in one place. `API.md` fixes
//! 4401 (token), 1009 (frame too large) and 1013 (too slow); the rest are RFC 6455's.

/// The client closed, or the connection failed under it.
pub(crate) const NORMAL: u16 = 1000;
/// The server is stopping (RFC 6455 "going away"); the client reconnects to another node.
pub(crate) const SHUTTING_DOWN: u16 = 1001;
/// The reason sent with [`SHUTTING_DOWN`].
pub(crate) const SHUTTING_DOWN_REASON: &str = "the server is shutting down";
/// The client was silent for the idle timeout. The same code as [`SHUTTING_DOWN`]
/// ("going away" covers both): clients and the test suite read 1001 for it, so it
/// keeps that code; the reason text tells the two apart.
pub(crate) const IDLE: u16 = 1001;
/// A frame that is not valid WebSocket.
pub(crate) const PROTOCOL_ERROR: u16 = 1002;
/// A policy refusal, such as too many connections for one user.
pub(crate) const POLICY: u16 = 1008;
/// A frame over `--ws-max-frame-bytes`.
pub(crate) const TOO_LARGE: u16 = 1009;
/// A client that cannot keep up ("try again later"): it reconnects and syncs.
pub(crate) const TRY_AGAIN: u16 = 1013;
/// A missing, expired or forged token, or another user's.
pub(crate) const UNAUTHORIZED: u16 = 4401;
