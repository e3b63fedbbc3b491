//! Adapter to hero_proc's secret service.
//!
//! hero_proc keeps secrets per *context* and *name*; our slot `deployer/users/42/forge_token` is
//! context `deployer`, name `users/42/forge_token`. Everything we assume about hero_proc's wire API
//! (socket path, method names, parameter and result shapes) is in [`assumed`], the one place to
//! change when the real API is published.

pub mod assumed;

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::{validate_slot, SecretError, SecretStore, SecretValue};

/// Secret store backed by hero_proc over its unix socket.
pub struct HeroProcSecretStore {
    socket: PathBuf,
}

impl HeroProcSecretStore {
    pub fn new(socket: PathBuf) -> HeroProcSecretStore {
        HeroProcSecretStore { socket }
    }

    /// The default socket, `$HERO_SOCKET_DIR/hero_proc/rpc.sock`.
    pub fn default_socket(socket_dir: &std::path::Path) -> PathBuf {
        socket_dir.join(assumed::SOCKET_RELATIVE_PATH)
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, SecretError> {
        let fail = |reason: String| SecretError::Service {
            endpoint: format!("unix:{}", self.socket.display()),
            reason,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let body = request_body(method, params);
        let request = http::Request::post(assumed::RPC_PATH)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        parse_reply(method, &bytes).map_err(fail)
    }
}

fn request_body(method: &str, params: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }).to_string()
}

/// A JSON-RPC reply's result; "not found" is `Null`. An error keeps only its code and message:
/// hero_proc's error data might echo params (a secret's value).
pub fn parse_reply(method: &str, bytes: &[u8]) -> Result<Value, String> {
    let reply: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON-RPC response: {e}"))?;
    if let Some(error) = reply.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        if code == assumed::NOT_FOUND_CODE {
            return Ok(Value::Null);
        }
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(format!("{method} failed: {code} {message}"));
    }
    Ok(reply.get("result").cloned().unwrap_or(Value::Null))
}

/// The HTTP body of a `set` of `slot` to `value`, for a writer that reaches hero_proc's socket
/// only through another program (the deployer, over SSH into a VM, piping it to `curl`); the
/// same body [`HeroProcSecretStore::set`] sends. Zeroed on drop: it holds the value.
pub fn set_request_body(
    slot: &str,
    value: &str,
) -> Result<zeroize::Zeroizing<String>, SecretError> {
    let (context, name) = split(slot)?;
    Ok(zeroize::Zeroizing::new(request_body(
        assumed::SET,
        assumed::set_params(context, name, value),
    )))
}

/// Splits a slot into hero_proc's (context, name).
fn split(slot: &str) -> Result<(&str, &str), SecretError> {
    validate_slot(slot)?;
    slot.split_once('/').ok_or(SecretError::InvalidSlot {
        slot: slot.to_owned(),
        reason: "must be <context>/<name>",
    })
}

#[async_trait::async_trait]
impl SecretStore for HeroProcSecretStore {
    async fn get(&self, slot: &str) -> Result<Option<SecretValue>, SecretError> {
        let (context, name) = split(slot)?;
        let result = self
            .call(assumed::GET, assumed::get_params(context, name))
            .await?;
        Ok(assumed::parse_get(&result).map(SecretValue::new))
    }

    async fn set(&self, slot: &str, value: &str) -> Result<(), SecretError> {
        let (context, name) = split(slot)?;
        self.call(assumed::SET, assumed::set_params(context, name, value))
            .await
            .map(|_| ())
    }

    async fn delete(&self, slot: &str) -> Result<bool, SecretError> {
        let (context, name) = split(slot)?;
        let result = self
            .call(assumed::DELETE, assumed::get_params(context, name))
            .await?;
        Ok(!result.is_null() && result != Value::Bool(false))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SecretError> {
        let context = prefix.split('/').next().unwrap_or("");
        if context.is_empty() {
            return Err(SecretError::Service {
                endpoint: format!("unix:{}", self.socket.display()),
                reason:
                    "hero_proc lists secrets per context: give a prefix starting with <context>/"
                        .into(),
            });
        }
        let result = self
            .call(assumed::LIST, assumed::list_params(context))
            .await?;
        let mut slots: Vec<String> = assumed::parse_list(&result)
            .into_iter()
            .map(|name| format!("{context}/{name}"))
            .filter(|s| s.starts_with(prefix))
            .collect();
        slots.sort();
        Ok(slots)
    }

    fn kind(&self) -> &'static str {
        "hero_proc"
    }
}
