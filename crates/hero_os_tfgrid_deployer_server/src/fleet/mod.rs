//! Operating a fleet of ready VMs (issue 14): the health watch ([`health`]) and its RPC methods
//! ([`rpc`]).

pub mod access;
pub mod expiry;
pub mod health;
pub mod rpc;
