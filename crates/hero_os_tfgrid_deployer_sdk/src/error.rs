//! Error codes of the RPC boundary.
//!
//! JSON-RPC reserves -32768..-32000; the standard codes are used verbatim. Application errors use
//! -32001..-32099 and carry `data.kind`, a stable snake_case name a script can branch on. Codes are
//! never renumbered: add new kinds at the end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every error the service can return, with its stable JSON-RPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The body is not valid JSON.
    ParseError,
    /// The JSON is not a valid JSON-RPC 2.0 request object.
    InvalidRequest,
    /// No method of that name is served.
    MethodNotFound,
    /// The params do not match the method's schema.
    InvalidParams,
    /// A bug or an unexpected failure inside the server; the log has the details.
    Internal,
    /// The referenced record does not exist.
    NotFound,
    /// The record already exists; `data.detail` carries it.
    AlreadyExists,
    /// A username breaks one of the naming rules; the message names the rule.
    InvalidUsername,
    /// Forge could not be reached (connection refused, timeout, 5xx after retries).
    ForgeUnavailable,
    /// Forge rejected the admin credentials (401/403).
    ForgeAuthRejected,
    /// Forge refused the name or email (reserved, taken, pattern not allowed).
    ForgeConflict,
    /// Forge answered something this client does not understand.
    ForgeProtocol,
    /// The operation is not allowed in the record's current state (e.g. delete with a live VM).
    FailedPrecondition,
    /// The secret store failed (missing or corrupt key, I/O).
    SecretStore,
    /// Another job is already active for this user; `data.detail` names it.
    JobConflict,
    /// No node fits the VM; the message lists each node and why it was rejected.
    NoCandidateNode,
    /// The compute backend failed.
    Backend,
    /// The caller is not allowed to do this.
    Forbidden,
    /// The server is shutting down or overloaded; try again.
    Unavailable,
    /// The operation was refused to protect something that may still exist or be in use;
    /// `data.detail.code` names why with a stable dotted code (e.g. `vm.still_exists`).
    Refused,
}

impl ErrorKind {
    /// The JSON-RPC `code` of this kind. Stable forever.
    pub const fn code(self) -> i64 {
        match self {
            ErrorKind::ParseError => -32700,
            ErrorKind::InvalidRequest => -32600,
            ErrorKind::MethodNotFound => -32601,
            ErrorKind::InvalidParams => -32602,
            ErrorKind::Internal => -32603,
            ErrorKind::NotFound => -32001,
            ErrorKind::AlreadyExists => -32002,
            ErrorKind::InvalidUsername => -32003,
            ErrorKind::ForgeUnavailable => -32004,
            ErrorKind::ForgeAuthRejected => -32005,
            ErrorKind::ForgeConflict => -32006,
            ErrorKind::ForgeProtocol => -32007,
            ErrorKind::FailedPrecondition => -32008,
            ErrorKind::SecretStore => -32009,
            ErrorKind::JobConflict => -32010,
            ErrorKind::NoCandidateNode => -32011,
            ErrorKind::Backend => -32012,
            ErrorKind::Forbidden => -32013,
            ErrorKind::Unavailable => -32014,
            ErrorKind::Refused => -32015,
        }
    }

    /// All kinds, for documentation and exhaustive tests.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::ParseError,
        ErrorKind::InvalidRequest,
        ErrorKind::MethodNotFound,
        ErrorKind::InvalidParams,
        ErrorKind::Internal,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidUsername,
        ErrorKind::ForgeUnavailable,
        ErrorKind::ForgeAuthRejected,
        ErrorKind::ForgeConflict,
        ErrorKind::ForgeProtocol,
        ErrorKind::FailedPrecondition,
        ErrorKind::SecretStore,
        ErrorKind::JobConflict,
        ErrorKind::NoCandidateNode,
        ErrorKind::Backend,
        ErrorKind::Forbidden,
        ErrorKind::Unavailable,
        ErrorKind::Refused,
    ];

    /// The kind for a code, if it is one of ours.
    pub fn from_code(code: i64) -> Option<ErrorKind> {
        ErrorKind::ALL.iter().copied().find(|k| k.code() == code)
    }

    /// The snake_case name, as it appears in `data.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ParseError => "parse_error",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MethodNotFound => "method_not_found",
            ErrorKind::InvalidParams => "invalid_params",
            ErrorKind::Internal => "internal",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidUsername => "invalid_username",
            ErrorKind::ForgeUnavailable => "forge_unavailable",
            ErrorKind::ForgeAuthRejected => "forge_auth_rejected",
            ErrorKind::ForgeConflict => "forge_conflict",
            ErrorKind::ForgeProtocol => "forge_protocol",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::SecretStore => "secret_store",
            ErrorKind::JobConflict => "job_conflict",
            ErrorKind::NoCandidateNode => "no_candidate_node",
            ErrorKind::Backend => "backend",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Refused => "refused",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `data` member of every error this service returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorData {
    /// Stable machine-readable name of the error.
    pub kind: ErrorKind,
    /// Structured context, e.g. the existing record for `already_exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// A JSON-RPC error object as returned by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({})", data.as_ref().map(|d| d.kind.as_str()).unwrap_or("error"))]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// `None` as well when `data` is there but this SDK cannot read it ([`lenient_data`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_data"
    )]
    pub data: Option<ErrorData>,
}

/// Reads `data` if this SDK knows its kind, else drops it. Why: a newer server adds kinds at the end (see the
/// module doc), and with a closed enum one unknown kind failed the whole response, so an old CLI reported a
/// working server as "not JSON-RPC". The code and the message still say what happened.
fn lenient_data<'de, D>(d: D) -> Result<Option<ErrorData>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = Option::<serde_json::Value>::deserialize(d)?;
    Ok(raw.and_then(|v| serde_json::from_value(v).ok()))
}

impl RpcError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RpcError {
            code: kind.code(),
            message: message.into(),
            data: Some(ErrorData { kind, detail: None }),
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        if let Some(data) = self.data.as_mut() {
            data.detail = Some(detail);
        }
        self
    }

    /// The kind, from `data.kind` or else from the code.
    pub fn kind(&self) -> Option<ErrorKind> {
        self.data
            .as_ref()
            .map(|d| d.kind)
            .or_else(|| ErrorKind::from_code(self.code))
    }
}

/// What can go wrong when calling the service through [`crate::Client`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a JSON-RPC error.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the deployer server at {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    /// The server answered, but not with what the contract promises.
    #[error("unexpected answer from the deployer server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The RPC error kind, if the server answered with one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Rpc(e) => e.kind(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.code()), "duplicate code for {kind}");
            assert_eq!(ErrorKind::from_code(kind.code()), Some(*kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::String(kind.as_str().to_owned()));
        }
    }

    #[test]
    fn an_error_of_a_kind_this_sdk_does_not_know_still_reads() {
        let e: RpcError = serde_json::from_value(serde_json::json!({
            "code": -32098,
            "message": "a newer server's refusal",
            "data": {"kind": "brand_new_kind", "detail": {"x": 1}}
        }))
        .unwrap();
        assert_eq!(
            (e.code, e.message.as_str()),
            (-32098, "a newer server's refusal")
        );
        assert!(e.data.is_none());
        // A known kind still reads in full.
        let e: RpcError = serde_json::from_value(
            serde_json::to_value(RpcError::new(ErrorKind::NotFound, "no")).unwrap(),
        )
        .unwrap();
        assert_eq!(e.data.map(|d| d.kind), Some(ErrorKind::NotFound));
    }
}
