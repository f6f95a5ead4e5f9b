//! Confab: a real-time chat server for online marketplaces.
//!
//! # Layout
//! Dependencies point one way, down this list:
//! - [`domain`]: the contract's types and rules; no I/O.
//! - [`store`]: the `Store` trait, its SQLite implementation and the conformance suite.
//! - [`auth`]: argon2 passwords, Confab's HS256 JWTs and the host marketplace's tokens.
//! - [`bus`]: carries events to the nodes whose users must hear of them.
//! - [`chat`]: the use-cases (register, hire, propose, send, read, page), over a `Store`.
//! - [`webhook`]: delivers the outbox's events to the host marketplace (signed, retried, in order).
//! - [`http`]: the axum routes, extractors and the one error type of the REST API.
//! - [`ws`]: the WebSocket endpoint, its sessions and this node's hub of connections.
//! - [`server`]: the accept loop (header deadline, connection cap, graceful stop).
//! - [`app`]: builds the state, binds the listener, serves until shutdown.
//! - [`lockfile`]: one process per data directory and SQLite file (a leaf).
//! - [`memory`]: gives freed memory back to the system after a burst (a leaf).
//! - [`config`]: the command line and environment; [`demo`]: the demo marketplace.

pub mod app;
pub mod auth;
pub mod bus;
pub mod chat;
pub mod config;
pub mod demo;
pub mod domain;
pub mod http;
pub mod lockfile;
pub mod memory;
pub mod server;
pub mod store;
pub mod webhook;
pub mod ws;
