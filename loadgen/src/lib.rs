//! Confab's load generator: drives any server that keeps the wire contract
//! (`shared/API.md`) over REST and WebSocket, and reports throughput, latency and
//! loss. Scenarios:
//! - [`pairs`]: users in pairs messaging each other by `recipient_id`, closed loop
//!   with a window of unacknowledged messages per user;
//! - [`idle`]: many authenticated connections held open: accept rate, failures,
//!   server memory per connection, and a sample sent through to prove them live;
//! - [`stalled`]: connections that stop reading while others send to them: the
//!   server's memory stays bounded and it closes them (its write timeout);
//! - [`history`]: preloads messages, then measures sending and history pages, to
//!   show that neither slows as the store grows;
//! - [`relay`]: not a scenario but the baseline: a bare in-memory WebSocket relay
//!   that keeps just enough of the contract for `pairs` to run against it.
//!
//! [`users`] registers and signs in the users; [`stats`] turns samples into the
//! figures; [`proc`] samples a server process's CPU and memory.

/// Bytes each busy WebSocket (`pairs` and the relay) reads at a time.
/// tungstenite zeroes a buffer of this size before every read, and its default is
/// 128 KiB: in the open loop, where a read brings one small frame, those `memset`s
/// were a third of the load generator's CPU, CPU the server under test then did
/// not have. 4 KiB cut them but split a commit's burst of acks and deliveries
/// into more reads; 16 KiB did best in both loops (`docs/benchmarks.md`, 2026-12-06).
pub const READ_BUFFER: usize = 16 * 1024;

pub mod history;
pub mod idle;
pub mod pairs;
pub mod proc;
pub mod relay;
pub mod stalled;
pub mod stats;
pub mod users;
