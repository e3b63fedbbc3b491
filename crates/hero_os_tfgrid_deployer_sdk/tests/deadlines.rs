//! The client's bounds, against stand-in servers on real unix sockets: a server that accepts and
//! never answers (stopped with SIGSTOP, wedged) costs a call its deadline, not for ever; and a
//! request that may have reached the server is never sent a second time (a retried
//! `reset_forge_password` would reset twice), while a read is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::{Client, ClientError, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// Reads one HTTP request (head and `Content-Length` body) from `s`; `false` at end of stream.
async fn read_request(s: &mut tokio::net::UnixStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return true;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn a_server_that_never_answers_costs_a_call_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpc.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let client = Client::new(Endpoint::Unix(path)).with_deadline(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        client.list_users(&Default::default()),
    )
    .await
    .expect("the call has a bound")
    .unwrap_err();
    assert!(
        matches!(&err, ClientError::Transport { reason, .. } if reason.contains("no answer within 0.3 s")),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    held.abort();
}

#[tokio::test]
async fn a_request_that_may_have_reached_the_server_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpc.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    // Answers the first request of a connection, then reads the second and closes without an answer.
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if !read_request(&mut s, &mut buf).await {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = br#"{"jsonrpc":"2.0","id":1,"result":{"users":[],"total":0}}"#;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(body).await.unwrap();
                if read_request(&mut s, &mut buf).await {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let client = Client::new(Endpoint::Unix(path));
    // The first call leaves a pooled connection; the second goes out on it and gets no answer.
    let _ = client
        .call_raw("deployer.list_users", serde_json::json!({}))
        .await;
    let err = client
        .call_raw(
            "deployer.reset_forge_password",
            serde_json::json!({"user_id": 1}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "the reset reached the server once, not twice"
    );
    // A read is harmless to repeat: the same failure, then once more on a fresh connection, which answers
    // (what a client needs after the server restarted under its pooled connection).
    let _ = client
        .call_raw("deployer.list_users", serde_json::json!({}))
        .await;
    let before = seen.load(Ordering::SeqCst);
    let users = client
        .call_raw("deployer.list_users", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(users["total"], 0);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        before + 2,
        "sent, lost, sent again"
    );
    server.abort();
}
