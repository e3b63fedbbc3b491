//! JSON-RPC 2.0 dispatch. Handlers are registered per SDK [`Method`] type, so a handler's params
//! and result are the documented ones by construction, and [`Registry::names`] lets a test prove
//! that the served set equals the documented set.

pub mod handlers;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hero_os_tfgrid_deployer_sdk::jsonrpc::Response;
use hero_os_tfgrid_deployer_sdk::methods::Method;
use hero_os_tfgrid_deployer_sdk::{ErrorKind, RpcError};
use serde_json::Value;

use crate::audit::Actor;
use crate::error::ServiceError;

/// How the request reached us; decides the actor and what is allowed.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    /// True over the local unix socket, where secrets may be read and written.
    pub local: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(Caller, Value) -> BoxFuture<Result<Value, RpcError>> + Send + Sync>;

/// The most requests one JSON-RPC batch may carry, and how many of them run at once. One body must not be able to
/// make the server hold thousands of answers (a batch of 2000 `rpc.discover` grew it by 850 MB) or start thousands
/// of health probes and long-polls together. No client of this service sends batches; the bound is for the rest.
pub const MAX_BATCH: usize = 50;
const BATCH_CONCURRENCY: usize = 4;

/// Method name → handler.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Handler>,
    /// The OpenRPC document, served by `rpc.discover`.
    discover: Arc<Value>,
}

impl Registry {
    pub fn new(openrpc: Value) -> Registry {
        Registry {
            handlers: HashMap::new(),
            discover: Arc::new(openrpc),
        }
    }

    /// Serves method `M` with `f`.
    pub fn register<M, F, Fut>(&mut self, f: F)
    where
        M: Method,
        F: Fn(Caller, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Output, ServiceError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |caller, params| {
            let f = f.clone();
            Box::pin(async move {
                // The one check for every secret-handling method (see `Method::LOCAL_ONLY`): before the
                // params are even read, so a TCP caller learns nothing from this method but "no".
                if M::LOCAL_ONLY && !caller.local {
                    return Err(ServiceError::Forbidden(format!(
                        "{} is only allowed over the local unix socket",
                        M::NAME
                    ))
                    .to_rpc());
                }
                // The TCP listener is read-only (see `Method::READS`): nothing there proves who is calling, so
                // nothing there may create, delete, deploy, cancel or probe — for every caller, in one place.
                if !M::READS && !caller.local {
                    return Err(ServiceError::Forbidden(format!(
                        "{} changes state and is only allowed over the local unix socket (TCP is read-only)",
                        M::NAME
                    ))
                    .to_rpc());
                }
                // Absent params mean "no params": an empty object.
                let params = if params.is_null() {
                    Value::Object(Default::default())
                } else {
                    params
                };
                if !params.is_object() {
                    return Err(RpcError::new(
                        ErrorKind::InvalidParams,
                        format!("{}: params must be an object (by-name)", M::NAME),
                    ));
                }
                let params: M::Params = serde_json::from_value(params).map_err(|e| {
                    RpcError::new(ErrorKind::InvalidParams, format!("{}: {e}", M::NAME))
                })?;
                let output = f(caller, params).await.map_err(|e| e.to_rpc())?;
                serde_json::to_value(output)
                    .map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))
            })
        });
        self.handlers.insert(M::NAME, handler);
    }

    /// Serves method `M` with `f`, handing it a clone of `state` on every call (the usual shape:
    /// a handle to the core, the caller, the params).
    pub fn register_with<M, S, Fut>(
        &mut self,
        state: S,
        f: impl Fn(S, Caller, M::Params) -> Fut + Send + Sync + 'static,
    ) where
        M: Method,
        S: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Output, ServiceError>> + Send + 'static,
    {
        self.register::<M, _, _>(move |caller, params| f(state.clone(), caller, params));
    }

    /// Every served method name (besides `rpc.discover`).
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.handlers.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Handles one HTTP body: a single request or a batch of at most [`MAX_BATCH`], run [`BATCH_CONCURRENCY`] at
    /// a time. `None` means "no response" (only
    /// notifications).
    pub async fn handle_body(&self, caller: &Caller, body: &[u8]) -> Option<Value> {
        let parsed: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Some(to_json(Response::failure(
                    Value::Null,
                    RpcError::new(ErrorKind::ParseError, format!("invalid JSON: {e}")),
                )))
            }
        };
        match parsed {
            Value::Array(items) if items.is_empty() => Some(to_json(Response::failure(
                Value::Null,
                RpcError::new(ErrorKind::InvalidRequest, "empty batch"),
            ))),
            Value::Array(items) if items.len() > MAX_BATCH => Some(to_json(Response::failure(
                Value::Null,
                RpcError::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "a batch of {} requests; at most {MAX_BATCH} are served in one",
                        items.len()
                    ),
                ),
            ))),
            Value::Array(items) => {
                use futures::StreamExt;
                // One `rpc.discover` per batch: each answer is the whole OpenRPC document (~0.4 MB as a
                // `Value`), so a 3 KB body of 50 of them held 21 MB until the batch was written.
                let mut discovers = 0;
                let items: Vec<(Value, bool)> = items
                    .into_iter()
                    .map(|i| {
                        if i.get("method").and_then(Value::as_str) == Some("rpc.discover") {
                            discovers += 1;
                        }
                        (i, discovers <= 1)
                    })
                    .collect();
                let responses: Vec<Value> = futures::stream::iter(items)
                    .map(|(i, discover_allowed)| self.handle_one(caller, i, discover_allowed))
                    .buffered(BATCH_CONCURRENCY)
                    .filter_map(|r| async move { r })
                    .collect()
                    .await;
                (!responses.is_empty()).then_some(Value::Array(responses))
            }
            single => self.handle_one(caller, single, true).await,
        }
    }

    async fn handle_one(
        &self,
        caller: &Caller,
        item: Value,
        discover_allowed: bool,
    ) -> Option<Value> {
        let Value::Object(mut obj) = item else {
            return Some(to_json(Response::failure(
                Value::Null,
                RpcError::new(ErrorKind::InvalidRequest, "a request must be a JSON object"),
            )));
        };
        let id = obj.remove("id");
        let valid_id = matches!(
            id,
            None | Some(Value::Null) | Some(Value::String(_)) | Some(Value::Number(_))
        );
        let response_id = id.clone().filter(|_| valid_id).unwrap_or(Value::Null);
        if obj.get("jsonrpc") != Some(&Value::String("2.0".into())) || !valid_id {
            return Some(to_json(Response::failure(
                response_id,
                RpcError::new(
                    ErrorKind::InvalidRequest,
                    "not a JSON-RPC 2.0 request (need \"jsonrpc\": \"2.0\", a string method and a string/number id)",
                ),
            )));
        }
        let Some(Value::String(method)) = obj.remove("method") else {
            return Some(to_json(Response::failure(
                response_id,
                RpcError::new(ErrorKind::InvalidRequest, "method must be a string"),
            )));
        };
        let params = obj.remove("params").unwrap_or(Value::Null);
        let result = if method == "rpc.discover" && !discover_allowed {
            Err(RpcError::new(
                ErrorKind::InvalidRequest,
                "rpc.discover is answered once per batch (its answer is the whole OpenRPC document)",
            ))
        } else if method == "rpc.discover" {
            Ok((*self.discover).clone())
        } else {
            match self.handlers.get(method.as_str()) {
                Some(handler) => handler(caller.clone(), params).await,
                None => Err(RpcError::new(
                    ErrorKind::MethodNotFound,
                    format!("method {method:?} not found; see rpc.discover"),
                )),
            }
        };
        // A notification (no id) gets no response, whatever happened.
        id.as_ref()?;
        Some(to_json(match result {
            Ok(v) => Response::success(response_id, v),
            Err(e) => Response::failure(response_id, e),
        }))
    }
}

fn to_json(r: Response) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}
