//! Shared helpers for the in-process tests: a fresh dev forge in a temp dir with a seeded admin,
//! and a one-shot request helper.
#![allow(dead_code)]
// Test support code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use hero_devforge::{app, AppState, Config, Db, SigningKey};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const BASE: &str = "http://forge.test";
pub const ADMIN: &str = "root";
pub const ADMIN_PW: &str = "root-password-123";

/// One RSA key per test binary: generating 2048-bit keys is slow in debug builds.
pub fn key_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| SigningKey::generate_pem().unwrap())
}

pub struct Forge {
    pub app: Router,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub admin_token: String,
}

pub fn forge_with(config: Config) -> Forge {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, ADMIN_PW).unwrap();
    let tok = dir.path().join("tok");
    hero_devforge::cli::seed_admin(dir.path(), ADMIN, &tok, Some(&pw)).unwrap();
    let admin_token = std::fs::read_to_string(&tok).unwrap();
    let db = Db::open(dir.path()).unwrap();
    let state = AppState::new(db, config, SigningKey::from_pem(key_pem()).unwrap());
    Forge {
        app: app(state.clone()),
        state,
        dir,
        admin_token,
    }
}

pub fn forge() -> Forge {
    forge_with(Config::new(BASE))
}

pub fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

pub fn token(t: &str) -> String {
    format!("token {t}")
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Forge {
    pub fn admin(&self) -> String {
        token(&self.admin_token)
    }

    pub fn admin_basic(&self) -> String {
        basic(ADMIN, ADMIN_PW)
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            json,
            text,
        }
    }

    /// Creates a user as admin (must_change_password false unless overridden in `extra`).
    pub async fn create_user(&self, name: &str, password: &str, extra: Value) -> Value {
        let mut body = serde_json::json!({
            "username": name,
            "email": format!("{name}@example.org"),
            "password": password,
            "must_change_password": false,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let r = self
            .call(
                Method::POST,
                "/api/v1/admin/users",
                Some(&self.admin()),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json
    }

    /// Mints a token for `user` with admin Basic auth; returns the secret.
    pub async fn mint(&self, user: &str, name: &str, scopes: &[&str]) -> String {
        let r = self
            .call(
                Method::POST,
                &format!("/api/v1/users/{user}/tokens"),
                Some(&self.admin_basic()),
                Some(serde_json::json!({"name": name, "scopes": scopes})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["sha1"].as_str().unwrap().to_string()
    }
}

/// Checks `value` against a swagger 2 definition of the committed fixture: every declared
/// property present with the declared type (and `date-time` strings parse as RFC 3339).
pub fn assert_matches_definition(value: &Value, definition: &str) {
    assert_matches_definition_except(value, definition, &[]);
}

/// As [`assert_matches_definition`], except that the properties in `optional` may be absent
/// (Forgejo's `omitempty` pointers such as `Repository.parent`); present ones are still checked.
pub fn assert_matches_definition_except(value: &Value, definition: &str, optional: &[&str]) {
    static SPEC: OnceLock<Value> = OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/forgejo.swagger.v1.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    });
    let def = &spec["definitions"][definition];
    let props = def["properties"].as_object().unwrap();
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("{definition}: not an object: {value}"));
    for (name, schema) in props {
        let Some(v) = obj.get(name) else {
            assert!(
                optional.contains(&name.as_str()),
                "{definition}.{name} missing in {value}"
            );
            continue;
        };
        let ty = schema["type"].as_str().unwrap_or("");
        let ok = match ty {
            "integer" => v.is_i64(),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => true,
        };
        assert!(ok, "{definition}.{name} should be {ty}, got {v}");
        if schema["format"] == "date-time" {
            let s = v.as_str().unwrap();
            assert!(
                chrono_like_rfc3339(s),
                "{definition}.{name} not RFC 3339: {s}"
            );
        }
    }
}

fn chrono_like_rfc3339(s: &str) -> bool {
    // YYYY-MM-DDTHH:MM:SS(.frac)?(Z|±HH:MM)
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s[19..].contains('+') || s[19..].contains('-'))
}
