//! Confab: a real-time chat server for online marketplaces.
//!
//! # Layout
//! Layers, lowest first. A module imports only from layers below its own, never
//! from a peer of its layer (`tests/layers.rs` checks this).
//! - L0, leaves: [`domain`] (the contract's types and rules; no I/O), [`lockfile`]
//!   (one process per data directory and SQLite file), [`memory`] (gives freed
//!   memory back to the system after a burst).
//! - L1: [`config`] (the command line and environment, every default once, the
//!   limits each part enforces, how secrets and URLs are shown).
//! - L2: [`auth`] (argon2 passwords, Confab's HS256 JWTs, the host marketplace's
//!   tokens), [`store`] (the `Store` trait, written once in SQL over a SQLite and a
//!   PostgreSQL backend), [`bus`] (carries events to the nodes whose users must
//!   hear of them; owns those transport events).
//! - L3: [`chat`], the use-cases (register, sign in, authenticate, hire, propose,
//!   send, read, page), over a `Store` and a `Bus`.
//! - L4: [`server`] (the accept loop: header deadline, connection cap, graceful
//!   stop), [`webhook`] (delivers the outbox's events to the host marketplace),
//!   [`demo`] (the demo marketplace).
//! - L5: [`http`], the REST routes, their state and extractors, the one error type,
//!   and the middleware every route answers through.
//! - L6: [`ws`], the WebSocket routes and state, sessions and this node's hub of
//!   connections (it uses `http`'s error type and client address).
//! - L7: [`app`] builds the state, merges the routers, binds the listener, serves
//!   until shutdown.
//! - L8: the `confab` binary (`main.rs`).

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
