//! WebSocket echo round-trip benchmark helper (used by benches/proxy_bench.sh; not a test).
//!
//! `ws_bench serve` — a WebSocket echo server on 127.0.0.1 (OS-chosen port), prints `READY <port>`.
//! `ws_bench sink` — an HTTP/1.1 server that reads every request body to its end, then answers 200 (the upload
//! target: a sink that answers before the body is read would end an upload early), prints `READY <port>`.
//! `ws_bench client <ws-url> <messages> [cookie]` — one connection, `messages` 32-byte text messages sent one at a
//! time, each waiting for its echo; prints `p50_us p99_us mean_us`.

use std::time::Instant;

use anyhow::{bail, Context as _};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve().await,
        Some("sink") => sink().await,
        Some("client") => {
            let url = args.get(1).context("client <ws-url> <messages> [cookie]")?;
            let n: usize = args.get(2).context("messages")?.parse()?;
            client(url, n, args.get(3).map(String::as_str)).await
        }
        _ => bail!("usage: ws_bench serve | client <ws-url> <messages> [cookie]"),
    }
}

async fn sink() -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("READY {}", l.local_addr()?.port());
    loop {
        let (s, _) = l.accept().await?;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let mut body = req.into_body();
                    let mut n = 0usize;
                    while let Some(frame) = body.frame().await {
                        if let Ok(d) = frame?.into_data() {
                            n += d.len();
                        }
                    }
                    Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(format!("{n}\n")),
                    )))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        });
    }
}

async fn serve() -> anyhow::Result<()> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("READY {}", l.local_addr()?.port());
    loop {
        let (s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn client(url: &str, n: usize, cookie: Option<&str>) -> anyhow::Result<()> {
    let mut req = url.into_client_request()?;
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse()?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let payload = "x".repeat(32);
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ws.send(Message::text(payload.clone())).await?;
        match ws.next().await {
            Some(Ok(m)) if m.is_text() => {}
            other => bail!("no echo: {other:?}"),
        }
        rtts.push(t.elapsed().as_micros() as u64);
    }
    rtts.sort_unstable();
    let pick = |q: f64| rtts[((rtts.len() as f64 - 1.0) * q) as usize];
    let mean = rtts.iter().sum::<u64>() / rtts.len().max(1) as u64;
    println!("{} {} {}", pick(0.5), pick(0.99), mean);
    Ok(())
}
