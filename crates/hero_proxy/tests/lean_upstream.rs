//! The lean upstream exchange (`hero_proxy::lean`, every bodiless request) through the real binary: response
//! framing in every form RFC 9112 §6.3 allows and the hostile ones, connection reuse and when a connection must
//! not be reused, against a scripted upstream that answers byte for byte what each case needs, and against real
//! nginx and Python's `http.server` (HTTP/1.0, close-delimited).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted upstream does after writing a canned answer.
#[derive(Clone, Copy, PartialEq)]
enum After {
    KeepOpen,
    Close,
}

/// The canned answer for a request path (the path after `/lean`).
fn answer(path: &str) -> (Vec<u8>, After) {
    let ka = After::KeepOpen;
    let (bytes, after): (&[u8], After) = match path {
        "/cl" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", ka),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1 \t; x\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n",
            ka,
        ),
        "/close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil close", After::Close),
        "/interim" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ka,
        ),
        "/conflict" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", ka),
        "/bad-length" => (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", ka),
        "/cl-list" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", ka),
        "/cl-twice" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", ka),
        "/head-list" => (b"HTTP/1.1 204 No Content\r\nContent-Length: 5, 6\r\n\r\n", ka),
        "/te-and-cl" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            ka,
        ),
        // A body that says 5 and sends more: the rest must never become the next request's response.
        "/overrun" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
            ka,
        ),
        "/bad-chunk" => (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", ka),
        "/short" => (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly this", After::Close),
        "/not-http" => (b"SSH-2.0-OpenSSH_9.2\r\n", After::Close),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", ka),
        "/once" => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce", After::Close),
        "/switch" => (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", ka),
        "/large" => {
            let body: Vec<u8> = (0..(1 << 20)).map(|i: u32| b'a' + (i % 26) as u8).collect();
            let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            v.extend_from_slice(&body);
            return (v, ka);
        }
        "/huge-head" => {
            let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..90 {
                v.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(1000)).as_bytes());
            }
            v.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            return (v, ka);
        }
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", ka),
    };
    (bytes.to_vec(), after)
}

/// A scripted upstream: answers each request head by its path, counts connections, records request heads.
struct Scripted {
    addr: std::net::SocketAddr,
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start() -> Scripted {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        // A request body (the POSTs) is read and dropped, so the next head starts clean.
                        let body_len: usize = head
                            .to_ascii_lowercase()
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        while buf.len() < body_len {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..body_len);
                        let path = head
                            .split(' ')
                            .nth(1)
                            .unwrap_or("/")
                            .trim_start_matches("/lean")
                            .to_owned();
                        let (mut bytes, after) = answer(&path);
                        if head.starts_with("HEAD ") {
                            let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
                            bytes.truncate(end + 4);
                        }
                        if s.write_all(&bytes).await.is_err() || after == After::Close {
                            return;
                        }
                    }
                });
            }
        });
        Scripted { addr, conns, task }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_to(addr: std::net::SocketAddr) -> ProxyBin {
    ProxyBin::start(&format!(
        "upstream_timeout_secs = 3\n[[routes]]\npath = \"/lean\"\nupstream = \"http://{addr}\"\npolicy = \"public\"\n"
    ))
    .await
}

/// One keep-alive client connection to the proxy: sends requests in order and reads each response by its framing
/// (the proxy's own answers are Content-Length or chunked), so the tests can see which upstream connection served it.
struct Client {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(port: u16) -> Client {
        Client {
            s: tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
            buf: Vec::new(),
        }
    }

    /// `(status, lower-cased head, body)`, or `None` if the proxy closed the connection or broke the response.
    async fn get(&mut self, method: &str, path: &str) -> Option<(u16, String, Vec<u8>)> {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.s.write_all(req.as_bytes()).await.ok()?;
        tokio::time::timeout(Duration::from_secs(10), self.read_one(method == "HEAD"))
            .await
            .expect("the proxy answered within 10 s")
    }

    /// A POST with `body`: it goes through hyper's client, not the lean exchange.
    async fn post(&mut self, path: &str, body: &str) -> Option<(u16, String, Vec<u8>)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.s.write_all(req.as_bytes()).await.ok()?;
        tokio::time::timeout(Duration::from_secs(10), self.read_one(false))
            .await
            .expect("the proxy answered within 10 s")
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = vec![0u8; 65536];
        match self.s.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    async fn read_one(&mut self, head_only: bool) -> Option<(u16, String, Vec<u8>)> {
        let end = loop {
            if let Some(e) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break e;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        self.buf.drain(..end + 4);
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let header = |n: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{n}: ")).map(str::to_owned))
        };
        let mut body = Vec::new();
        if head_only || status == 204 || status == 304 {
        } else if let Some(n) = header("content-length") {
            let n: usize = n.parse().ok()?;
            while self.buf.len() < n {
                self.fill().await?;
            }
            body = self.buf.drain(..n).collect();
        } else if header("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(e) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break e;
                    }
                    self.fill().await?;
                };
                let size =
                    usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).ok()?, 16)
                        .ok()?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        }
        Some((status, head, body))
    }
}

#[tokio::test]
async fn every_response_framing_arrives_whole_and_reuse_follows_the_rules() {
    let up = Scripted::start().await;
    let proxy = proxy_to(up.addr).await;
    let mut c = Client::connect(proxy.port).await;

    // Content-Length, twice on one client connection: one upstream connection serves both.
    for _ in 0..2 {
        let (st, _, body) = c.get("GET", "/lean/cl").await.unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"hello"[..]));
    }
    assert_eq!(up.conns(), 1, "a keep-alive upstream connection is reused");

    // Chunked with extensions, whitespace before `;` and a trailer: decoded, and the connection is reused.
    let (st, _, body) = c.get("GET", "/lean/chunked").await.unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"hello!"[..]));
    let (st, _, _) = c.get("GET", "/lean/cl").await.unwrap();
    assert_eq!(
        (st, up.conns()),
        (200, 1),
        "a chunked body read to its end leaves the connection reusable"
    );

    // Interim 1xx answers are skipped; the final one is passed on.
    let (st, head, body) = c.get("GET", "/lean/interim").await.unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"ok"[..]), "{head}");

    // HEAD: the upstream's Content-Length reaches the client and no body is read; its connection is not reused
    // (a late body after HEAD is the classic backend bug, see `lean::framing`), so the next GET opens a new one.
    let (st, head, _) = c.get("HEAD", "/lean/cl").await.unwrap();
    assert_eq!(st, 200);
    assert!(head.contains("content-length: 5"), "{head}");
    let (st, _, body) = c.get("GET", "/lean/cl").await.unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(up.conns(), 2, "no reuse after a HEAD");
    // Equal Content-Length values (a list, or repeated) frame the body, and the client gets one value (RFC 9110
    // §8.6); on a 204, whose length frames nothing, a list that is not one number is dropped.
    for path in ["/lean/cl-list", "/lean/cl-twice"] {
        let (st, head, body) = c.get("GET", path).await.unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"hello"[..]), "{path}");
        assert_eq!(head.matches("content-length").count(), 1, "{path}: {head}");
        assert!(head.contains("content-length: 5\r\n"), "{path}: {head}");
    }
    let (st, head, _) = c.get("GET", "/lean/head-list").await.unwrap();
    assert_eq!(st, 204);
    assert!(!head.contains("content-length"), "{head}");
    // 204: no body, and the connection stays usable.
    let (st, _, body) = c.get("GET", "/lean/no-content").await.unwrap();
    assert_eq!((st, body.len()), (204, 0));
    let (st, _, _) = c.get("GET", "/lean/cl").await.unwrap();
    assert_eq!((st, up.conns()), (200, 2));

    // A 1 MiB body across many reads arrives byte for byte.
    let (st, _, body) = c.get("GET", "/lean/large").await.unwrap();
    assert_eq!((st, body.len()), (200, 1 << 20));
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == b'a' + (i % 26) as u8));
    assert_eq!(up.conns(), 2);

    // Read until the upstream closes: whole, and the next request needs a new connection.
    let (st, _, body) = c.get("GET", "/lean/close").await.unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"until close"[..]));
    let (st, _, _) = c.get("GET", "/lean/cl").await.unwrap();
    assert_eq!((st, up.conns()), (200, 3));

    // The upstream closes right after a complete answer (no `Connection: close`): the pooled connection is stale;
    // the next GET still gets its answer, on a fresh connection.
    for _ in 0..3 {
        let (st, _, body) = c.get("GET", "/lean/once").await.unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"once"[..]));
        let (st, _, body) = c.get("GET", "/lean/cl").await.unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"hello"[..]));
    }
}

/// The framing headers reach the client right on both upstream paths — bodiless GETs through the lean exchange,
/// POSTs with a body through hyper's client: a Content-Length beside Transfer-Encoding is dropped (RFC 9112
/// §6.3; on the POST path it was forwarded and cut the decoded body short), and a list of equal values becomes
/// one value.
#[tokio::test]
async fn framing_headers_are_made_right_on_both_upstream_paths() {
    let up = Scripted::start().await;
    let proxy = proxy_to(up.addr).await;
    for (path, want) in [
        ("/lean/te-and-cl", &b"ok"[..]),
        ("/lean/cl-list", b"hello"),
        ("/lean/cl-twice", b"hello"),
    ] {
        for post in [false, true] {
            let mut c = Client::connect(proxy.port).await;
            let answer = if post {
                c.post(path, "x").await
            } else {
                c.get("GET", path).await
            };
            let (st, head, body) =
                answer.unwrap_or_else(|| panic!("{path} post={post}: no answer"));
            assert_eq!(
                (st, body.as_slice()),
                (200, want),
                "{path} post={post}: {head}"
            );
            let lengths: Vec<&str> = head
                .lines()
                .filter_map(|l| l.strip_prefix("content-length: "))
                .collect();
            assert!(
                lengths.is_empty() || lengths == [want.len().to_string().as_str()],
                "{path} post={post}: {head}"
            );
        }
    }
    // And a response head over 64 KiB is refused on both.
    for post in [false, true] {
        let mut c = Client::connect(proxy.port).await;
        let answer = if post {
            c.post("/lean/huge-head", "x").await
        } else {
            c.get("GET", "/lean/huge-head").await
        };
        let a = answer.map(|a| (a.0, a.1, a.2.len()));
        assert_eq!(a.as_ref().map(|a| a.0), Some(502), "post={post}: {a:?}");
    }
}

#[tokio::test]
async fn ambiguous_or_broken_answers_never_bleed_into_the_next_response() {
    let up = Scripted::start().await;
    let proxy = proxy_to(up.addr).await;

    // Refused outright: a 502 page, and the client's connection goes on working.
    for path in [
        "/conflict",
        "/bad-length",
        "/not-http",
        "/huge-head",
        "/switch",
    ] {
        let mut c = Client::connect(proxy.port).await;
        let (st, _, _) = c.get("GET", &format!("/lean{path}")).await.unwrap();
        assert_eq!(st, 502, "{path}");
        let (st, _, body) = c.get("GET", "/lean/cl").await.unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"hello"[..]), "after {path}");
    }

    // Both Transfer-Encoding and Content-Length: decoded by Transfer-Encoding, the connection never reused.
    // (One idle upstream connection is pooled at this point: the last `/lean/cl`'s.)
    let mut c = Client::connect(proxy.port).await;
    let (st, _, body) = c.get("GET", "/lean/te-and-cl").await.unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"ok"[..]));
    let after = up.conns();
    let (st, _, body) = c.get("GET", "/lean/cl").await.unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(
        up.conns(),
        after + 1,
        "the TE+CL connection was dropped, not pooled"
    );

    // More bytes than Content-Length said: the extra never reaches anyone (the connection is dropped), over and over.
    for _ in 0..5 {
        let (st, _, body) = c.get("GET", "/lean/overrun").await.unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"hello"[..]));
        let (st, _, body) = c.get("GET", "/lean/cl").await.unwrap();
        assert_eq!(
            (st, body.as_slice()),
            (200, &b"hello"[..]),
            "no smuggled answer"
        );
    }

    // A malformed chunk or a body cut short after the head went out: the client's response is broken off (its
    // connection closed), never completed with made-up bytes; a new client connection works.
    for path in ["/bad-chunk", "/short"] {
        let mut c = Client::connect(proxy.port).await;
        let got = c.get("GET", &format!("/lean{path}")).await;
        assert!(
            got.is_none() || got.as_ref().is_some_and(|(st, _, _)| *st == 502),
            "{path}: {:?}",
            got.map(|(s, h, b)| (s, h, String::from_utf8_lossy(&b).into_owned()))
        );
        let mut c = Client::connect(proxy.port).await;
        let (st, _, _) = c.get("GET", "/lean/cl").await.unwrap();
        assert_eq!(st, 200, "after {path}");
    }
}

#[tokio::test]
async fn real_nginx_and_python_http_server_behind_the_lean_path() {
    // nginx: Content-Length, 204, 304 from a static file, and a chunked body (sub_filter makes the length unknown).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("page.html"), "hello from a file\n").unwrap();
    let nginx = Nginx::start(&format!(
        "root {root}; location = /lean/none {{ return 204; }} \
         location /lean/ {{ alias {root}/; sub_filter 'file' 'chunked file'; sub_filter_once off; sub_filter_types *; }}",
        root = dir.path().display()
    ))
    .await;
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\npath = \"/lean\"\nupstream = \"http://127.0.0.1:{}\"\npolicy = \"public\"\n",
        nginx.port
    ))
    .await;
    let mut c = Client::connect(proxy.port).await;
    for _ in 0..3 {
        let (st, head, body) = c.get("GET", "/lean/page.html").await.unwrap();
        assert_eq!(st, 200, "{head}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            "hello from a chunked file\n"
        );
        let (st, _, _) = c.get("GET", "/lean/none").await.unwrap();
        assert_eq!(st, 204);
    }
    let mtime = reqwest::get(format!("http://127.0.0.1:{}/lean/page.html", nginx.port))
        .await
        .unwrap()
        .headers()
        .get("last-modified")
        .map(|v| v.to_str().unwrap().to_owned());
    if let Some(lm) = mtime {
        let req = format!(
            "GET /lean/page.html HTTP/1.1\r\nHost: localhost\r\nIf-Modified-Since: {lm}\r\n\r\n"
        );
        c.s.write_all(req.as_bytes()).await.unwrap();
        let (st, _, body) = c.read_one(false).await.unwrap();
        assert_eq!((st, body.len()), (304, 0));
    }
    let (st, _, body) = c.get("GET", "/lean/page.html").await.unwrap();
    assert_eq!(
        (st, body.len()),
        (200, 26),
        "the connection is in step after a 304"
    );

    // Python's http.server answers HTTP/1.0 and closes: read to the end, never pooled.
    let (pport, reserved) = reserve_port();
    drop(reserved);
    std::fs::create_dir(dir.path().join("lean")).unwrap();
    std::fs::write(dir.path().join("lean/py.txt"), "from python\n").unwrap();
    let py = tokio::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &pport.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _py = ProcGuard(py);
    wait_listening(pport).await;
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\npath = \"/lean\"\nupstream = \"http://127.0.0.1:{pport}\"\npolicy = \"public\"\n"
    ))
    .await;
    let mut c = Client::connect(proxy.port).await;
    for _ in 0..3 {
        let (st, _, body) = c.get("GET", "/lean/py.txt").await.unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"from python\n"[..]));
    }
}
