//! End-to-end tests: the real server on port 0, driven over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod abuse;
mod accounts;
mod cluster;
mod crash;
mod faults;
mod host;
mod ledger;
mod link;
mod load_balancer;
mod marketplace;
mod messages;
mod multi_node;
mod ops;
#[path = "../common/pg_schema.rs"]
mod pg_schema;
mod receiver;
mod support;
mod web;
mod websocket;
mod workflows;
