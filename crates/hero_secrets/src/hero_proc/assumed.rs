//! ASSUMED hero_proc secret API. hero_proc's OpenRPC document is not published; what is known
//! (tfgrid-apis.md §3.1) is: a built-in store with create/get/list/delete, namespaced by context,
//! reached through `hero_proc_sdk` over a unix socket, socket `hero_proc/rpc.sock` under
//! `$HERO_SOCKET_DIR` (unconfirmed). Everything below is our guess, isolated here:
//!
//! | call | method | params | result |
//! | --- | --- | --- | --- |
//! | get | `secrets.get` | `{context, name}` | `{value}`, or error [`NOT_FOUND_CODE`] when absent |
//! | set | `secrets.set` | `{context, name, value}` | anything |
//! | delete | `secrets.delete` | `{context, name}` | `true` / `false`, or error [`NOT_FOUND_CODE`] |
//! | list | `secrets.list` | `{context}` | `[name, …]` or `{names: [...]}` |
//!
//! Transport: HTTP/1.1 `POST /rpc` with a JSON-RPC 2.0 body, like every Hero service.

use serde_json::{json, Value};

pub const SOCKET_RELATIVE_PATH: &str = "hero_proc/rpc.sock";
pub const RPC_PATH: &str = "/rpc";
pub const GET: &str = "secrets.get";
pub const SET: &str = "secrets.set";
pub const DELETE: &str = "secrets.delete";
pub const LIST: &str = "secrets.list";
/// Error code we assume hero_proc uses for "no such secret".
pub const NOT_FOUND_CODE: i64 = -32001;

pub fn get_params(context: &str, name: &str) -> Value {
    json!({ "context": context, "name": name })
}

pub fn set_params(context: &str, name: &str, value: &str) -> Value {
    json!({ "context": context, "name": name, "value": value })
}

pub fn list_params(context: &str) -> Value {
    json!({ "context": context })
}

/// `{value}` or a bare string; null means absent.
pub fn parse_get(result: &Value) -> Option<String> {
    match result {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("value").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `[names]` or `{names: [...]}`.
pub fn parse_list(result: &Value) -> Vec<String> {
    let array = match result {
        Value::Array(a) => Some(a),
        Value::Object(o) => o.get("names").and_then(Value::as_array),
        _ => None,
    };
    array
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A shell command, run on a VM over SSH, that sends the JSON-RPC request it reads on stdin to
/// hero_proc's socket and prints the reply: `curl --unix-socket` (Ubuntu 24.04's curl has it).
/// The socket is `$HERO_SOCKET_DIR/hero_proc/rpc.sock`, else under `~/hero/var/sockets`
/// (unconfirmed, as the socket path above). Bounded: 20 s.
pub fn remote_call_command() -> String {
    format!(
        "curl -sS --max-time 20 --unix-socket \"${{HERO_SOCKET_DIR:-$HOME/hero/var/sockets}}/{SOCKET_RELATIVE_PATH}\" \
         -H 'Content-Type: application/json' --data-binary @- http://localhost{RPC_PATH}"
    )
}
