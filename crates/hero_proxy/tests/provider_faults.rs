//! The identity provider failing or misbehaving, against real HTTP servers on sockets: discovery while the
//! provider is down is fetched once for a burst of sign-ins and not again for a few seconds, and an answer that
//! never ends is refused at a cap instead of filling memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hero_proxy::oidc::Provider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server answering every request on its own connection with `head` then `body_chunks` chunks of 64 KiB
/// (`usize::MAX`: never ending); counts the requests.
async fn server(head: &'static str, body_chunks: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < body_chunks {
                    let framed = [
                        format!("{:x}\r\n", chunk.len()).into_bytes(),
                        chunk.clone(),
                        b"\r\n".to_vec(),
                    ]
                    .concat();
                    if sock.write_all(&framed).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

fn provider(issuer: &str) -> Provider {
    Provider::new("forge", issuer, "hero-proxy", None, "openid").unwrap()
}

/// Twenty sign-ins at once while the provider answers 503: one discovery fetch, all twenty told why, and none
/// again until the pause is over. Before, each started its own fetch (each up to 15 s when the provider hangs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_of_a_provider_that_is_down_is_fetched_once_per_pause() {
    let (issuer, hits) = server(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        0,
    )
    .await;
    let p = Arc::new(provider(&issuer));
    let tries: Vec<_> = (0..20)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.discovery().await })
        })
        .collect();
    for t in tries {
        let err = t.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(p.discovery().await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 1, "within the pause");
}

/// A discovery answer that never ends is refused at the cap (1 MiB), quickly, instead of being read until the
/// client's timeout with memory growing all the while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_provider_answer_is_refused_at_the_cap() {
    let (issuer, _) = server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        usize::MAX,
    )
    .await;
    let err = provider(&issuer).discovery().await.unwrap_err();
    assert!(err.to_string().contains("too long"), "{err}");
}
