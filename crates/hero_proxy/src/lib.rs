//! hero_proxy: the SSO edge. Library half (everything testable); `main.rs` only parses arguments and starts it.
//!
//! Codemap: [`config`] → [`routes`]/[`upstream`] (bodiless requests through [`lean`]; both keep idle connections in a per-thread [`pool`]) → [`handler`] (per request) using [`session`], [`vault`],
//! [`oidc`], [`login`], [`headers`]; [`store`] is the sqlite state, [`claims`] the authorization model, [`rpc`] the
//! admin API, [`server`] the listeners, [`tls`] optional TLS termination, [`tunnel`] WebSocket tunnels (closed when their access ends).
//!
//! Architecture invariant: every request that reaches an upstream went through `headers::strip_reserved` after
//! `headers::remove_hop_by_hop` and before identity injection, whatever its route policy.

pub mod app;
pub mod claims;
pub mod clock;
pub mod config;
pub mod error;
pub mod handler;
pub mod headers;
pub mod lean;
pub mod login;
pub mod oidc;
pub mod pages;
pub mod pool;
pub mod routes;
pub mod rpc;
pub mod server;
pub mod session;
pub mod store;
pub mod target;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod vault;

pub use app::App;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use error::{ProxyError, Result};
pub use server::{start, Running};
