//! The cockpit stand-in as a backend of the identity contract, in-process over real TCP:
//! the family of identity forms (none, forged plain headers, wrong key, expired, disagreeing
//! headers, valid), `/health` without identity, the request log, and "My Forge repositories"
//! against a real dev Forge with the passed-through token, the stored fallback, and none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hero_cockpit_standin::{app, Cockpit, CockpitConfig, RequestLog, USER_FORGE_TOKEN_SLOT};
use hero_identity::{AssertionPayload, AssertionSigner, Claim, IdentityVerifier};
use hero_secrets::{MemorySecretStore, SecretStore};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn payload(user: &str, exp_in: i64) -> AssertionPayload {
    let n = now();
    AssertionPayload {
        iss: hero_identity::ASSERTION_ISSUER.into(),
        sub: user.into(),
        ctx: None,
        aud: "cockpit".into(),
        claims: vec![Claim::parse(&format!("users.{user}")).unwrap()],
        prv: "forge".into(),
        lgn: user.into(),
        xid: "42".into(),
        iat: n,
        exp: (n as i64 + exp_in) as u64,
    }
}

/// A dev Forge on a real port with `carol` and two repositories; returns (url, carol's token).
async fn forge(dir: &std::path::Path) -> (String, String) {
    use hero_devforge::{AppState, Config};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::open(dir, Config::new(&url)).unwrap();
    let db = state.db.clone();
    tokio::spawn(hero_devforge::run::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let pw = "carol-password-123";
    let (hash, salt) = hero_devforge::secrets::hash_password(pw);
    db.create_user(&hero_devforge::db::NewUser {
        name: "carol".into(),
        email: "carol@example.org".into(),
        passwd_hash: hash,
        salt,
        visibility: "public".into(),
        ..Default::default()
    })
    .unwrap();
    let http = reqwest::Client::new();
    for (name, desc) in [("hello-hero", "<script>alert(1)</script>"), ("notes", "")] {
        let r = http
            .post(format!("{url}/api/v1/user/repos"))
            .basic_auth("carol", Some(pw))
            .json(&serde_json::json!({"name": name, "description": desc}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let t: serde_json::Value = http
        .post(format!("{url}/api/v1/users/carol/tokens"))
        .basic_auth("carol", Some(pw))
        .json(&serde_json::json!({"name": "cockpit", "scopes": ["read:user", "read:repository"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (url, t["sha1"].as_str().unwrap().to_string())
}

/// A path, the identity headers sent, the expected status.
type Case = (&'static str, Vec<(&'static str, String)>, u16);

struct Running {
    url: String,
    log: std::path::PathBuf,
}

async fn cockpit(
    dir: &std::path::Path,
    signer: &AssertionSigner,
    forge_url: &str,
    secrets: Option<Arc<dyn SecretStore>>,
) -> Running {
    let log = dir.join("requests.jsonl");
    let c = Cockpit::new(CockpitConfig {
        verifier: IdentityVerifier::Signed(signer.verifier("cockpit").unwrap()),
        forge_url: forge_url.into(),
        secrets,
        request_log: log.clone(),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app(c).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    Running { url, log }
}

#[tokio::test]
async fn identity_forms_health_and_the_request_log() {
    let dir = tempfile::tempdir().unwrap();
    let signer = AssertionSigner::from_seed(&[7; 32]);
    let other = AssertionSigner::from_seed(&[8; 32]);
    let (forge_url, _) = forge(&dir.path().join("forge")).await;
    let ck = cockpit(dir.path(), &signer, &forge_url, None).await;
    let http = reqwest::Client::new();
    let good = signer.sign(&payload("carol", 300));

    let cases: Vec<Case> = vec![
        ("/health", vec![], 200),
        ("/", vec![], 401),
        ("/api/me", vec![], 401),
        ("/", vec![("x-hero-user", "carol".into())], 401),
        (
            "/",
            vec![
                ("x-hero-user", "carol".into()),
                ("x-hero-claims", "users.carol".into()),
            ],
            401,
        ),
        (
            "/",
            vec![("x-hero-assertion", other.sign(&payload("carol", 300)))],
            401,
        ),
        (
            "/",
            vec![(
                "x-hero-assertion",
                signer.sign(&payload(
                    "carol",
                    -(hero_identity::CLOCK_LEEWAY_SECS as i64) - 10,
                )),
            )],
            401,
        ),
        ("/", vec![("x-hero-assertion", format!("{good}x"))], 401),
        ("/", vec![("x-hero-assertion", "not.a.jws".into())], 401),
        (
            "/",
            vec![
                ("x-hero-assertion", good.clone()),
                ("x-hero-user", "bob".into()),
            ],
            401,
        ),
        (
            "/",
            vec![
                ("x-hero-assertion", good.clone()),
                ("x-hero-claims", "groups.admin,users.carol".into()),
            ],
            401,
        ),
        (
            "/",
            vec![
                ("x-hero-assertion", good.clone()),
                ("x-hero-user", "carol".into()),
            ],
            200,
        ),
        ("/", vec![("x-hero-assertion", good.clone())], 200),
        ("/health", vec![("x-hero-user", "mallory".into())], 200),
    ];
    for (path, headers, want) in &cases {
        let mut req = http.get(format!("{}{path}", ck.url));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), *want, "{path} {headers:?}");
        if *want == 200 && *path == "/" {
            let body = r.text().await.unwrap();
            assert!(
                body.contains("Signed in as <strong id=\"user\">carol</strong>"),
                "{body}"
            );
            assert!(body.contains("<code>users.carol</code>"), "{body}");
        }
    }
    let logged = RequestLog::read(&ck.log).unwrap();
    assert_eq!(logged.len(), cases.len());
    for (l, (path, _, want)) in logged.iter().zip(&cases) {
        assert_eq!(l.path, *path);
        assert_eq!(l.status, *want);
        // A user is recorded only when the signed assertion verified.
        assert_eq!(
            l.user.as_deref(),
            (*want == 200 && *path == "/").then_some("carol"),
            "{l:?}"
        );
    }
    let text = std::fs::read_to_string(&ck.log).unwrap();
    assert!(!text.contains(&good), "the log must not hold assertions");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ck.log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Every answer carries the reference backend's security headers.
    let r = http
        .get(format!("{}/", ck.url))
        .header("x-hero-assertion", &good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(r.headers()[name], value, "{name}");
    }
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
}

#[tokio::test]
async fn repositories_with_the_passed_token_the_stored_one_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let signer = AssertionSigner::from_seed(&[9; 32]);
    let (forge_url, token) = forge(&dir.path().join("forge")).await;
    let store = Arc::new(MemorySecretStore::default());
    let ck = cockpit(dir.path(), &signer, &forge_url, Some(store.clone())).await;
    let http = reqwest::Client::new();
    let me = |extra: Option<String>| {
        let mut r = http
            .get(format!("{}/api/me", ck.url))
            .header("x-hero-assertion", signer.sign(&payload("carol", 300)));
        if let Some(t) = extra {
            r = r.header("x-hero-forge-token", t);
        }
        async move {
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<serde_json::Value>().await.unwrap()
        }
    };
    // None passed, none stored.
    let v = me(None).await;
    assert_eq!(v["repositories"]["token"], "none");
    assert_eq!(v["repositories"]["repos"], serde_json::json!([]));
    // Passed through by the proxy.
    let v = me(Some(token.clone())).await;
    assert_eq!(v["repositories"]["token"], "passed_through");
    let names: Vec<_> = v["repositories"]["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["carol/hello-hero", "carol/notes"]);
    // Stored fallback, used only when nothing is passed, and for the VM's owner only.
    store.set(USER_FORGE_TOKEN_SLOT, &token).await.unwrap();
    let v = me(None).await;
    assert_eq!(
        v["repositories"]["token"], "none",
        "no owner recorded: nobody's"
    );
    store
        .set(hero_secrets::slots::COCKPIT_FORGE_OWNER, "carol")
        .await
        .unwrap();
    let dave = http
        .get(format!("{}/api/me", ck.url))
        .header("x-hero-assertion", signer.sign(&payload("dave", 300)))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        dave["repositories"]["token"], "none",
        "another user: not the owner's token"
    );
    assert_eq!(dave["repositories"]["repos"], serde_json::json!([]));
    let v = me(None).await;
    assert_eq!(v["repositories"]["token"], "stored");
    assert_eq!(v["repositories"]["repos"].as_array().unwrap().len(), 2);
    // A bad passed token wins over the stored one and says what happened, plainly.
    let v = me(Some("0".repeat(40))).await;
    assert_eq!(v["repositories"]["token"], "passed_through");
    assert_eq!(
        v["repositories"]["error"],
        "Forge refused to list them (HTTP 401)"
    );
    // The HTML page escapes Forge's free text and names the source.
    let page = http
        .get(&ck.url)
        .header("x-hero-assertion", signer.sign(&payload("carol", 300)))
        .header("x-hero-forge-token", &token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("My Forge repositories"));
    assert!(page.contains("data-source=\"passed_through\""));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    assert!(!page.contains(&token));
    let log = std::fs::read_to_string(&ck.log).unwrap();
    assert!(
        !log.contains(&token),
        "the request log must not hold tokens"
    );
}
