//! `GET /api/v1/version`: clients log it to know which Forgejo rules they are talking to.

use axum::Json;
use serde_json::{json, Value};

pub async fn get_version() -> Json<Value> {
    Json(json!({ "version": crate::VERSION }))
}
