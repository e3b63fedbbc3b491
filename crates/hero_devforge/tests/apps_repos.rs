//! OAuth2 applications by id (`GET`/`PATCH`/`DELETE /user/applications/oauth2/{id}`), `Sudo` on
//! them, and the caller's repositories (`GET`/`POST /user/repos`): Forgejo's rules, table-driven
//! over the equivalent and hostile forms of each input.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const PW: &str = "alice-password-1";
const CB: &str = "https://carol.example.org/oauth/callback";

async fn create_app(f: &Forge, auth: &str, name: &str) -> Value {
    let r = f
        .call(
            Method::POST,
            "/api/v1/user/applications/oauth2",
            Some(auth),
            Some(json!({"name": name, "redirect_uris": [CB], "confidential_client": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json
}

/// Whether `client_id:secret` authenticates as a client (the introspection endpoint checks it).
async fn client_secret_works(f: &Forge, client_id: &str, secret: &str) -> bool {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/login/oauth/introspect")
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("token=x"))
        .unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await.unwrap();
    status == StatusCode::OK
}

#[tokio::test]
async fn get_patch_delete_an_app_like_forgejo() {
    let f = forge();
    f.create_user("alice", PW, json!({})).await;
    let alice = token(&f.mint("alice", "apps", &["write:user"]).await);
    let created = create_app(&f, &alice, "hero_proxy (carol)").await;
    let id = created["id"].as_i64().unwrap();
    let client_id = created["client_id"].as_str().unwrap().to_string();
    let first_secret = created["client_secret"].as_str().unwrap().to_string();
    assert!(client_secret_works(&f, &client_id, &first_secret).await);

    // GET: the app without its secret, in the swagger's shape.
    let r = f
        .call(
            Method::GET,
            &format!("/api/v1/user/applications/oauth2/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_matches_definition(&r.json, "OAuth2Application");
    assert_eq!(r.json["client_secret"], "");
    assert_eq!(r.json["client_id"], client_id.as_str());
    assert_eq!(r.json["redirect_uris"], json!([CB]));

    // PATCH: fields replaced, client id kept, a new secret returned; the old one stops working.
    let cb2 = "https://carol.example.org:8443/oauth/callback";
    let r = f
        .call(
            Method::PATCH,
            &format!("/api/v1/user/applications/oauth2/{id}"),
            Some(&alice),
            Some(json!({"name": "renamed", "redirect_uris": [cb2], "confidential_client": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_matches_definition(&r.json, "OAuth2Application");
    assert_eq!(r.json["id"], id);
    assert_eq!(r.json["client_id"], client_id.as_str());
    assert_eq!(r.json["name"], "renamed");
    assert_eq!(r.json["redirect_uris"], json!([cb2]));
    let new_secret = r.json["client_secret"].as_str().unwrap().to_string();
    assert!(!new_secret.is_empty());
    assert_ne!(new_secret, first_secret);
    assert!(client_secret_works(&f, &client_id, &new_secret).await);
    assert!(!client_secret_works(&f, &client_id, &first_secret).await);

    // PATCH binds the same form as create: name and redirect URIs are required.
    for (body, want) in [
        (json!({"redirect_uris": [CB]}), "[Name]: Required"),
        (json!({"name": "x"}), "[RedirectURIs]: Required"),
        (
            json!({"name": "x", "redirect_uris": []}),
            "[RedirectURIs]: Required",
        ),
        (json!({"name": 5, "redirect_uris": [CB]}), ""),
    ] {
        let r = f
            .call(
                Method::PATCH,
                &format!("/api/v1/user/applications/oauth2/{id}"),
                Some(&alice),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert!(
            r.json["message"].as_str().unwrap().contains(want),
            "{body}: {}",
            r.text
        );
    }
    let r = f
        .call(
            Method::PATCH,
            &format!("/api/v1/user/applications/oauth2/{id}"),
            Some(&alice),
            Some(json!({"name": "x", "redirect_uris": ["not a url"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // DELETE: 204, then it is gone for every method, and a second delete is 404.
    let uri = format!("/api/v1/user/applications/oauth2/{id}");
    let r = f.call(Method::DELETE, &uri, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!client_secret_works(&f, &client_id, &new_secret).await);
    let r = f.call(Method::GET, &uri, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["message"], "The target couldn't be found.");
    let r = f.call(Method::DELETE, &uri, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .call(
            Method::PATCH,
            &uri,
            Some(&alice),
            Some(json!({"name": "x", "redirect_uris": [CB]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn app_ids_that_are_not_the_callers_app_are_not_found() {
    let f = forge();
    f.create_user("alice", PW, json!({})).await;
    f.create_user("bob", PW, json!({})).await;
    let alice = token(&f.mint("alice", "apps", &["write:user"]).await);
    let bob = token(&f.mint("bob", "apps", &["write:user"]).await);
    let bobs = create_app(&f, &bob, "bob's").await;
    let bob_id = bobs["id"].as_i64().unwrap();
    // Every form that names no app of alice's: absent, zero, negative, non-numeric, huge, bob's.
    for id in [
        "999".to_string(),
        "0".into(),
        "-1".into(),
        "abc".into(),
        "1e3".into(),
        "99999999999999999999".into(),
        bob_id.to_string(),
        format!("{bob_id}.0"),
        format!("+{bob_id}x"),
    ] {
        let uri = format!("/api/v1/user/applications/oauth2/{id}");
        for m in [Method::GET, Method::DELETE] {
            let r = f.call(m.clone(), &uri, Some(&alice), None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {id}: {}", r.text);
        }
    }
    // PATCH of another user's app is Forgejo's 500 (`UID mismatch`), and changes nothing.
    let r = f
        .call(
            Method::PATCH,
            &format!("/api/v1/user/applications/oauth2/{bob_id}"),
            Some(&alice),
            Some(json!({"name": "stolen", "redirect_uris": ["https://evil.example/cb"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    let r = f
        .call(
            Method::GET,
            &format!("/api/v1/user/applications/oauth2/{bob_id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(r.json["name"], "bob's");
    assert!(
        client_secret_works(
            &f,
            bobs["client_id"].as_str().unwrap(),
            bobs["client_secret"].as_str().unwrap()
        )
        .await
    );
}

#[tokio::test]
async fn app_list_pages() {
    let f = forge();
    f.create_user("alice", PW, json!({})).await;
    let alice = token(&f.mint("alice", "apps", &["write:user"]).await);
    for i in 0..5 {
        create_app(&f, &alice, &format!("app{i}")).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    for (q, want) in [
        ("", vec!["app0", "app1", "app2", "app3", "app4"]),
        ("?limit=2", vec!["app0", "app1"]),
        ("?limit=2&page=3", vec!["app4"]),
        ("?limit=2&page=4", vec![]),
        (
            "?page=0&limit=0",
            vec!["app0", "app1", "app2", "app3", "app4"],
        ),
    ] {
        let r = f
            .call(
                Method::GET,
                &format!("/api/v1/user/applications/oauth2{q}"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
        assert_eq!(r.headers["x-total-count"], "5");
        assert_eq!(names(&r.json), want, "{q}");
    }
}

#[tokio::test]
async fn app_routes_need_the_user_scope() {
    let f = forge();
    f.create_user("alice", PW, json!({})).await;
    let writer = token(&f.mint("alice", "w", &["write:user"]).await);
    let reader = token(&f.mint("alice", "r", &["read:user"]).await);
    let other = token(&f.mint("alice", "o", &["write:repository"]).await);
    let id = create_app(&f, &writer, "a").await["id"].as_i64().unwrap();
    let uri = format!("/api/v1/user/applications/oauth2/{id}");
    let body = json!({"name": "b", "redirect_uris": [CB]});
    let cases: [(&str, Method, Option<Value>, StatusCode, &str); 7] = [
        (&reader, Method::GET, None, StatusCode::OK, ""),
        (
            &reader,
            Method::PATCH,
            Some(body.clone()),
            StatusCode::FORBIDDEN,
            "[write:user]",
        ),
        (
            &reader,
            Method::DELETE,
            None,
            StatusCode::FORBIDDEN,
            "[write:user]",
        ),
        (
            &other,
            Method::GET,
            None,
            StatusCode::FORBIDDEN,
            "[read:user]",
        ),
        (
            &other,
            Method::DELETE,
            None,
            StatusCode::FORBIDDEN,
            "[write:user]",
        ),
        (&writer, Method::GET, None, StatusCode::OK, ""),
        (
            "",
            Method::GET,
            None,
            StatusCode::UNAUTHORIZED,
            "token is required",
        ),
    ];
    for (auth, m, b, want, msg) in cases {
        let auth = (!auth.is_empty()).then_some(auth);
        let r = f.call(m.clone(), &uri, auth, b).await;
        assert_eq!(r.status, want, "{m} {auth:?}: {}", r.text);
        if !msg.is_empty() {
            assert!(
                r.json["message"].as_str().unwrap().contains(msg),
                "{}",
                r.text
            );
        }
    }
}

#[tokio::test]
async fn sudo_makes_and_deletes_an_app_owned_by_the_user() {
    let f = forge();
    f.create_user("carol", PW, json!({})).await;
    let admin = f.admin();
    let r = f
        .call(
            Method::POST,
            "/api/v1/user/applications/oauth2?sudo=carol",
            Some(&admin),
            Some(json!({"name": "carol's cockpit", "redirect_uris": [CB], "confidential_client": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_i64().unwrap();
    let carol = token(&f.mint("carol", "apps", &["read:user"]).await);
    let r = f
        .call(
            Method::GET,
            "/api/v1/user/applications/oauth2",
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{}", r.text);
    // Not the admin's own app.
    let r = f
        .call(
            Method::GET,
            &format!("/api/v1/user/applications/oauth2/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .call(
            Method::DELETE,
            &format!("/api/v1/user/applications/oauth2/{id}?sudo=carol"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

/// `Repository` as Forgejo emits it for a plain repository (its `omitempty` pointers absent).
fn assert_repository(v: &Value) {
    assert_matches_definition_except(
        v,
        "Repository",
        &[
            "parent",
            "external_tracker",
            "external_wiki",
            "repo_transfer",
        ],
    );
    assert_matches_definition(&v["owner"], "User");
    assert_matches_definition(&v["permissions"], "Permission");
    assert_matches_definition(&v["internal_tracker"], "InternalTracker");
}

async fn create_repo(f: &Forge, auth: &str, body: Value) -> (StatusCode, Value, String) {
    let r = f
        .call(Method::POST, "/api/v1/user/repos", Some(auth), Some(body))
        .await;
    (r.status, r.json, r.text)
}

#[tokio::test]
async fn repo_names_follow_forgejos_rules() {
    let f = forge();
    f.create_user("carol", PW, json!({})).await;
    let carol = basic("carol", PW);
    let long = "a".repeat(101);
    let max = "b".repeat(100);
    let cases: Vec<(&str, StatusCode, &str)> = vec![
        ("", StatusCode::UNPROCESSABLE_ENTITY, "[Name]: Required"),
        (
            "has space",
            StatusCode::UNPROCESSABLE_ENTITY,
            "[Name]: AlphaDashDot",
        ),
        (
            "slash/name",
            StatusCode::UNPROCESSABLE_ENTITY,
            "[Name]: AlphaDashDot",
        ),
        (
            "ünïcode",
            StatusCode::UNPROCESSABLE_ENTITY,
            "[Name]: AlphaDashDot",
        ),
        (
            "semi;colon",
            StatusCode::UNPROCESSABLE_ENTITY,
            "[Name]: AlphaDashDot",
        ),
        (&long, StatusCode::UNPROCESSABLE_ENTITY, "[Name]: MaxSize"),
        ("..", StatusCode::UNPROCESSABLE_ENTITY, "name is reserved"),
        (".", StatusCode::UNPROCESSABLE_ENTITY, "name is reserved"),
        ("-", StatusCode::UNPROCESSABLE_ENTITY, "name is reserved"),
        (
            "x.git",
            StatusCode::UNPROCESSABLE_ENTITY,
            "[pattern: *.git]",
        ),
        (
            "X.GIT",
            StatusCode::UNPROCESSABLE_ENTITY,
            "[pattern: *.git]",
        ),
        (
            "feed.rss",
            StatusCode::UNPROCESSABLE_ENTITY,
            "[pattern: *.rss]",
        ),
        (
            "notes.wiki",
            StatusCode::UNPROCESSABLE_ENTITY,
            "[pattern: *.wiki]",
        ),
        ("ok.name_-1", StatusCode::CREATED, ""),
        (&max, StatusCode::CREATED, ""),
        ("Demo", StatusCode::CREATED, ""),
        (
            "demo",
            StatusCode::CONFLICT,
            "The repository with the same name already exists.",
        ),
        (
            "DEMO",
            StatusCode::CONFLICT,
            "The repository with the same name already exists.",
        ),
    ];
    for (name, want, msg) in cases {
        let (status, body, text) = create_repo(&f, &carol, json!({"name": name})).await;
        assert_eq!(status, want, "{name:?}: {text}");
        if want == StatusCode::CREATED {
            assert_repository(&body);
            assert_eq!(body["name"], name);
            assert_eq!(body["full_name"], format!("carol/{name}"));
            assert_eq!(body["owner"]["login"], "carol");
        } else {
            assert!(
                body["message"].as_str().unwrap().contains(msg),
                "{name:?}: {text}"
            );
        }
    }
    // Another user may use a name carol has.
    f.create_user("bob", PW, json!({})).await;
    let (status, _, text) = create_repo(&f, &basic("bob", PW), json!({"name": "demo"})).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    // Other fields: checked like Forgejo.
    for (body, want) in [
        (
            json!({"name": "f1", "object_format_name": "md5"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "f2", "description": "d".repeat(2049)}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "f3", "private": "yes"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "f4", "private": true, "auto_init": true, "default_branch": "trunk"}),
            StatusCode::CREATED,
        ),
    ] {
        let (status, b, text) = create_repo(&f, &carol, body.clone()).await;
        assert_eq!(status, want, "{body}: {text}");
        if want == StatusCode::CREATED {
            assert_eq!(b["private"], true);
            assert_eq!(b["empty"], false);
            assert_eq!(b["default_branch"], "trunk");
        }
    }
}

#[tokio::test]
async fn user_repos_need_user_and_repository_scopes_and_list_only_the_callers() {
    let f = forge();
    f.create_user("carol", PW, json!({})).await;
    f.create_user("bob", PW, json!({})).await;
    for n in ["zeta", "alpha", "Mid"] {
        let (s, _, t) = create_repo(&f, &basic("carol", PW), json!({"name": n})).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
    }
    create_repo(&f, &basic("bob", PW), json!({"name": "bobs"})).await;
    // The deployer's user-token scopes and the proxy's OAuth scope both can list.
    let deployer = token(
        &f.mint(
            "carol",
            "deployer",
            &[
                "write:repository",
                "write:issue",
                "read:user",
                "read:organization",
            ],
        )
        .await,
    );
    let r = f
        .call(Method::GET, "/api/v1/user/repos", Some(&deployer), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["x-total-count"], "3");
    let names: Vec<_> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["alpha", "Mid", "zeta"],
        "default order is alphabetical"
    );
    for x in r.json.as_array().unwrap() {
        assert_repository(x);
    }
    let r = f
        .call(
            Method::GET,
            "/api/v1/user/repos?order_by=newest&limit=2",
            Some(&deployer),
            None,
        )
        .await;
    let names: Vec<_> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Mid", "alpha"]);
    let r = f
        .call(
            Method::GET,
            "/api/v1/user/repos?order_by=bogus",
            Some(&deployer),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Scope table: the user category (outer group) is checked first, then repository.
    let cases: [(&[&str], Method, StatusCode, &str); 5] = [
        (
            &["read:repository"],
            Method::GET,
            StatusCode::FORBIDDEN,
            "[read:user]",
        ),
        (
            &["read:user"],
            Method::GET,
            StatusCode::FORBIDDEN,
            "[read:repository]",
        ),
        (
            &["read:user", "write:repository"],
            Method::POST,
            StatusCode::FORBIDDEN,
            "[write:user]",
        ),
        (
            &["write:user"],
            Method::POST,
            StatusCode::FORBIDDEN,
            "[write:repository]",
        ),
        (
            &["write:user", "write:repository"],
            Method::POST,
            StatusCode::CREATED,
            "",
        ),
    ];
    for (i, (scopes, m, want, msg)) in cases.into_iter().enumerate() {
        let t = token(&f.mint("carol", &format!("t{i}"), scopes).await);
        let body = (m == Method::POST).then(|| json!({"name": format!("scoped{i}")}));
        let r = f
            .call(m.clone(), "/api/v1/user/repos", Some(&t), body)
            .await;
        assert_eq!(r.status, want, "{scopes:?} {m}: {}", r.text);
        if !msg.is_empty() {
            assert!(
                r.json["message"].as_str().unwrap().contains(msg),
                "{}",
                r.text
            );
        }
    }
    let r = f.call(Method::GET, "/api/v1/user/repos", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
