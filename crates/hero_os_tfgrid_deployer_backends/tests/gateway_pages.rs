//! Issue 11 item 9 for the local gateway: whatever goes wrong, the person at the URL gets a plain
//! page that says so (no such machine / not answering), never an internal address, port, resource
//! name or error chain. Table-driven over the forms a request can take (raw HTTP on a socket, so
//! a missing or malformed `Host` is really sent as such).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use hero_os_tfgrid_deployer_backends::compute::discard_output;
use hero_os_tfgrid_deployer_backends::{
    ComputeBackend, GatewayRequest, LocalBackend, LocalConfig, ResourceName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` (request line + headers, without the final blank line) and reads the whole answer.
async fn raw(addr: SocketAddr, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway answers within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn every_refusal_is_a_plain_page_without_internals() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = LocalConfig::new(root.path());
    cfg.gateway_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let be = LocalBackend::start(cfg).await.unwrap();
    let addr = be.gateway_addr();
    // A route to a port where nothing listens: the machine is "down".
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let name = ResourceName::new(7, "carol").unwrap();
    be.deploy_gateway(
        &GatewayRequest {
            name: name.clone(),
            host_label: "carol".into(),
            backend_url: format!("http://127.0.0.1:{dead_port}"),
            node_id: None,
        },
        discard_output(),
    )
    .await
    .unwrap();
    let gw_port = addr.port();
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("GET / HTTP/1.1\r\nHost: nobody.localhost:{gw_port}"),
            404,
            "No such machine",
        ),
        (
            "GET /health HTTP/1.1\r\nHost: nobody.localhost".into(),
            404,
            "No such machine",
        ),
        (
            "GET / HTTP/1.1\r\nHost: NOBODY.LOCALHOST.".into(),
            404,
            "No such machine",
        ),
        (
            "GET / HTTP/1.1\r\nHost: localhost".into(),
            404,
            "No such machine",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.b.localhost".into(),
            404,
            "No such machine",
        ),
        (
            "GET / HTTP/1.1\r\nHost: carol.example.com".into(),
            404,
            "No such machine",
        ),
        (
            "GET / HTTP/1.1\r\nHost: <script>.localhost".into(),
            404,
            "No such machine",
        ),
        ("GET / HTTP/1.0".into(), 400, "Bad request"),
        (
            format!("GET / HTTP/1.1\r\nHost: carol.localhost:{gw_port}"),
            502,
            "not answering",
        ),
        (
            "GET /health HTTP/1.1\r\nHost: Carol.localhost".into(),
            502,
            "not answering",
        ),
        (
            "POST /x?y=1 HTTP/1.1\r\nHost: carol.localhost\r\nContent-Length: 0".into(),
            502,
            "not answering",
        ),
    ];
    let internals = [
        "127.0.0.1".to_string(),
        dead_port.to_string(),
        name.to_string(),
        "hero_u".into(),
        "refused".into(),
        "error".into(),
        "unreachable".into(),
        "route".into(),
        "<script>".into(),
        root.path().display().to_string(),
    ];
    for (head, status, phrase) in cases {
        let answer = raw(addr, &head).await;
        let (headers, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        // HTTP/1.0 requests are answered in HTTP/1.0.
        assert!(
            headers.starts_with(&format!("HTTP/1.1 {status}"))
                || headers.starts_with(&format!("HTTP/1.0 {status}")),
            "{head:?}: {headers}"
        );
        assert!(body.contains(phrase), "{head:?}: {body}");
        assert!(body.starts_with("<!doctype html>"), "{head:?}: {body}");
        let lower_headers = headers.to_ascii_lowercase();
        assert!(
            lower_headers.contains("content-type: text/html"),
            "{headers}"
        );
        assert!(
            lower_headers.contains("cache-control: no-store"),
            "{headers}"
        );
        for bad in &internals {
            assert!(
                !body
                    .to_ascii_lowercase()
                    .contains(&bad.to_ascii_lowercase()),
                "{head:?}: the page leaks {bad:?}: {body}"
            );
        }
    }
    // After decommission the same URL is "no such machine".
    be.delete_gateway(&name, discard_output()).await.unwrap();
    let answer = raw(addr, "GET / HTTP/1.1\r\nHost: carol.localhost").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("No such machine"), "{answer}");
}
