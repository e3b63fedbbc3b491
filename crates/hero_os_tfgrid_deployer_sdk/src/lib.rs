//! The contract of the `hero_os_tfgrid_deployer` service, defined once.
//!
//! * [`types`]: the wire types every method takes and returns.
//! * [`methods`]: one zero-sized type per RPC method binding its name to its params and result,
//!   so the server, the client and the OpenRPC document can never disagree.
//! * [`openrpc`]: the OpenRPC 1.x document, derived from the Rust types with `schemars`.
//! * [`error`]: JSON-RPC error codes, the standard ones and our stable application codes.
//! * [`username`]: the username rules, shared by server, CLI and dashboard so they agree.
//! * [`client`]: the typed async client over a unix socket or TCP.

pub mod client;
pub mod error;
pub mod jobs;
pub mod jsonrpc;
pub mod methods;
pub mod openrpc;
#[cfg(feature = "rusqlite")]
pub mod sql;
pub mod types;
pub mod username;

pub use client::{Client, Endpoint};
pub use error::{ClientError, ErrorKind, RpcError};
