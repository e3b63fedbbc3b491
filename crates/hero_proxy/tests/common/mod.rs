//! Test harness: the real `oidc-provider` peer (node, started directly), an echo upstream, and the proxy in-process
//! with a manual clock and an in-memory secret store. Every spawned process is killed by PID in a Drop guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hero_proxy::{Config, ManualClock, Running};
use hero_secrets::{MemorySecretStore, SecretStore};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

pub const CLIENT_ID: &str = "hero-proxy";
/// The peer's fixed test-only client secret (tests/peers/oidc-peer.mjs).
pub const CLIENT_SECRET: &str = "peer-test-secret";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free loopback port for a proxy whose address must be known before it starts (it is part
/// of the redirect URI the OIDC peer is configured with). The port stays held until the returned
/// socket is dropped: bound but not listening, with `SO_REUSEPORT` as hero_proxy binds its own, so
/// the proxy can bind it too, while the OS gives it to nobody else asking for a free port (picking
/// a port and releasing it before the proxy bound it left a window for exactly that). Connections
/// only ever reach listening sockets.
pub fn reserve_port() -> (u16, tokio::net::TcpSocket) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_reuseaddr(true).unwrap();
    sock.set_reuseport(true).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = sock.local_addr().unwrap().port();
    (port, sock)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A child process killed (by its PID) when dropped.
pub struct ProcGuard(pub Child);

impl Drop for ProcGuard {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// The oidc-provider peer.
pub struct Peer {
    pub port: u16,
    pub issuer: String,
    _proc: ProcGuard,
}

impl Peer {
    pub async fn start(redirect_uris: &[String]) -> Peer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc-peer.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .arg(redirect_uris.join(","))
            .env("HERO_PEERS_DIR", repo_root().join("tools/peers"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().unwrap();
        let guard = ProcGuard(child);
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(p) = l.strip_prefix("READY ") {
                    return p.trim().parse::<u16>().unwrap();
                }
            }
            panic!("peer exited before READY");
        })
        .await
        .expect("peer did not start within 20 s");
        Peer {
            port,
            issuer: format!("http://127.0.0.1:{port}"),
            _proc: guard,
        }
    }

    /// Sets an account's Forge groups at the peer (its next id_token carries them).
    pub async fn set_groups(&self, account: &str, groups: &[&str]) {
        let r = reqwest::Client::new()
            .post(format!(
                "{}/__peer/groups?account={account}&groups={}",
                self.issuer,
                groups.join(",")
            ))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Makes the token endpoint answer 503 (an outage at the identity provider) or serve again.
    pub async fn outage(&self, on: bool) {
        let r = reqwest::Client::new()
            .post(format!("{}/__peer/outage?on={}", self.issuer, u8::from(on)))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/__peer/stats", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// An upstream that answers every request with the headers it received, as JSON `[[name, value], ...]`.
pub struct Echo {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub async fn start() -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let pairs: Vec<(String, String)> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_owned(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect();
                        let body =
                            serde_json::json!({ "path": req.uri().to_string(), "headers": pairs });
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body.to_string()),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Echo { addr, task }
    }
}

/// Headers the echo upstream saw.
pub struct Seen(pub Vec<(String, String)>);

impl Seen {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn one(&self, name: &str) -> Option<&str> {
        let v = self.all(name);
        assert!(v.len() <= 1, "{name} appears {} times", v.len());
        v.first().copied()
    }
}

pub struct Harness {
    pub peer: Peer,
    pub echo: Echo,
    pub proxy: Running,
    pub clock: Arc<ManualClock>,
    pub secrets: Arc<MemorySecretStore>,
    pub base: String,
    pub port: u16,
    _dir: tempfile::TempDir,
}

#[derive(Default, Clone)]
pub struct Opts {
    /// Routes and tables, after the standard routes (`$UPSTREAM`: the echo upstream).
    pub extra_toml: String,
    /// Top-level settings (`key = value` lines), before any table.
    pub settings: String,
    pub ws_upstream: Option<SocketAddr>,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Opts::default()).await
    }

    pub async fn start_with(opts: Opts) -> Harness {
        // Held until the proxy has bound it too (see `reserve_port`).
        let (port, _reserved) = reserve_port();
        let base = format!("http://localhost:{port}");
        let peer = Peer::start(&[format!("{base}/oauth/callback")]).await;
        let echo = Echo::start().await;
        let dir = tempfile::tempdir().unwrap();
        let secrets = Arc::new(MemorySecretStore::new());
        secrets
            .set("cockpit/FORGE_OAUTH_CLIENT_ID", CLIENT_ID)
            .await
            .unwrap();
        secrets
            .set("cockpit/FORGE_OAUTH_CLIENT_SECRET", CLIENT_SECRET)
            .await
            .unwrap();
        secrets
            .set("cockpit/FORGE_OAUTH_ISSUER", &peer.issuer)
            .await
            .unwrap();
        let up = format!("http://{}", echo.addr);
        let ws = opts
            .ws_upstream
            .map(|a| {
                format!("[[routes]]\npath = \"/ws\"\nupstream = \"http://{a}\"\npolicy = \"sso\"\n")
            })
            .unwrap_or_default();
        let toml = format!(
            r#"
listen = "127.0.0.1:{port}"
state_dir = "{state}"
socket_dir = "{state}/sockets"
public_scheme = "http"
public_url = "{base}"
{settings}
[[routes]]
path = "/"
upstream = "{up}"
policy = "sso"
[[routes]]
path = "/public"
upstream = "{up}"
policy = "public"
[[routes]]
path = "/admin"
upstream = "{up}"
policy = "admin"
[[routes]]
path = "/dns"
upstream = "{up}"
policy = "claim:dns.zone.write"
[[routes]]
path = "/tok"
upstream = "{up}"
policy = "sso"
pass_token = true
{ws}
{extra}
"#,
            state = dir.path().display(),
            // `$UPSTREAM` in extra routes: the echo upstream, only known once it listens.
            extra = opts.extra_toml.replace("$UPSTREAM", &up),
            settings = opts.settings,
        );
        let cfg = Config::from_toml_with_env(&toml, Vec::new()).unwrap();
        let clock = Arc::new(ManualClock::new(unix_now()));
        let proxy = hero_proxy::start(cfg, secrets.clone(), clock.clone())
            .await
            .unwrap_or_else(|e| panic!("hero_proxy did not start: {e:?}"));
        Harness {
            peer,
            echo,
            proxy,
            clock,
            secrets,
            base,
            port,
            _dir: dir,
        }
    }

    /// A client that never follows redirects and keeps no cookies (tests set `Cookie` by hand, because the proxy's
    /// cookies are `Secure` and these requests are plain http).
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// Starts a login at the proxy; returns (authorize URL, login cookie pair).
    pub async fn begin_login(&self, rd: &str, user: &str) -> (String, String) {
        begin_login(&self.base, rd, user).await
    }

    /// Walks the peer's redirects (auto-approving interactions) until it redirects to our callback.
    pub async fn walk_peer(&self, authorize_url: &str) -> String {
        walk_peer(&self.base, &self.peer.issuer, authorize_url).await
    }

    /// Completes the callback; returns the response.
    pub async fn callback(&self, callback_url: &str, login_cookie: &str) -> reqwest::Response {
        Self::client()
            .get(callback_url)
            .header("cookie", login_cookie)
            .send()
            .await
            .unwrap()
    }

    /// Full login as `user`; returns the `__Host-hero_session=<id>` pair.
    pub async fn login(&self, user: &str) -> String {
        login_at(&self.base, &self.peer.issuer, user).await
    }

    /// Signs out the session of `cookie` as the site's own sign-out button does (a same-origin POST).
    pub async fn sign_out(&self, cookie: &str) -> reqwest::Response {
        Self::client()
            .post(format!("{}/oauth/logout", self.base))
            .header("cookie", cookie)
            .header("sec-fetch-site", "same-origin")
            .header("origin", &self.base)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        Self::client()
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_seen(&self, path: &str, cookie: &str) -> Seen {
        seen_at(&self.base, path, cookie).await
    }
}

/// What the [`Echo`] upstream behind the proxy at `base` received for `GET <path>` with `cookie` (asserting a 200).
pub async fn seen_at(base: &str, path: &str, cookie: &str) -> Seen {
    let r = Harness::client()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    let v: serde_json::Value = r.json().await.unwrap();
    Seen(serde_json::from_value(v["headers"].clone()).unwrap())
}

pub fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

pub fn session_pair(r: &reqwest::Response) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with("__Host-hero_session=") && !c.starts_with("__Host-hero_session=;"))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

pub fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Starts a login at the proxy at `base`; returns (authorize URL, login cookie pair).
pub async fn begin_login(base: &str, rd: &str, user: &str) -> (String, String) {
    let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let r = Harness::client()
        .get(format!("{base}/oauth/login?rd={rd}&login_hint={user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "login start");
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-hero_login="))
        .unwrap();
    (loc, cookie.split(';').next().unwrap().to_owned())
}

/// Follows the provider's redirects with a cookie jar (its interactions auto-approve) until it redirects to the
/// proxy's callback; works for the oidc-provider peer.
pub async fn walk_peer(base: &str, issuer: &str, authorize_url: &str) -> String {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let mut url = authorize_url.to_owned();
    for _ in 0..20 {
        if url.starts_with(&format!("{base}/oauth/callback")) {
            return url;
        }
        let r = c.get(&url).send().await.unwrap();
        let loc = r
            .headers()
            .get("location")
            .unwrap_or_else(|| panic!("no redirect from {url}: {}", r.status()))
            .to_str()
            .unwrap()
            .to_owned();
        url = if loc.starts_with('/') {
            format!("{issuer}{loc}")
        } else {
            loc
        };
    }
    panic!("peer never redirected to the callback");
}

/// Full login at `base` through the peer at `issuer`; returns the session cookie pair.
pub async fn login_at(base: &str, issuer: &str, user: &str) -> String {
    let (auth, lc) = begin_login(base, "/", user).await;
    let cb = walk_peer(base, issuer, &auth).await;
    let r = Harness::client()
        .get(&cb)
        .header("cookie", &lc)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        303,
        "callback: {}",
        r.text().await.unwrap_or_default()
    );
    session_pair(&r).expect("session cookie")
}

/// Polls until something accepts TCP connections on `port` (deadline 30 s).
pub async fn wait_listening(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listening on {port}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Debian nginx (installed by scripts/install-test-deps.sh) on an OS-chosen port, in the foreground, killed by PID
/// on drop. `server_body` is the inside of its first `server { }` block (the `listen` line is added; `$PORT$`
/// stands for the port, for further blocks).
pub struct Nginx {
    pub port: u16,
    _proc: ProcGuard,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub async fn start(server_body: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        // nginx cannot be told to pick a port and report it; hold one with SO_REUSEPORT until it listens.
        let (port, reserved) = reserve_port();
        let d = dir.path().display();
        let conf = format!(
            // One process, no master: the guard kills nginx by PID with SIGKILL, and a master killed that way
            // leaves its workers running (orphans holding the reused port and answering later tests' requests).
            "master_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log stderr;\nevents {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/client; proxy_temp_path {d}/proxy;\n \
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n \
             server {{ listen 127.0.0.1:{port} reuseport; {server_body} }}\n}}\n",
            server_body = server_body.replace("$PORT$", &port.to_string())
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .args(["-e", "stderr", "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx (scripts/install-test-deps.sh)");
        let guard = ProcGuard(child);
        wait_listening(port).await;
        drop(reserved);
        Nginx {
            port,
            _proc: guard,
            _dir: dir,
        }
    }
}

/// The real `hero_proxy` binary with an encrypted file secret store seeded like production (the oidc-provider
/// peer as its `forge` provider), `routes_toml` appended to its config file. Killed by PID on drop.
pub struct ProxyBin {
    pub port: u16,
    pub base: String,
    pub peer: Peer,
    pub peer2: Option<Peer>,
    pub secrets: hero_secrets::FileSecretStore,
    pub log: PathBuf,
    pub rpc_socket: PathBuf,
    _proc: ProcGuard,
    _dir: tempfile::TempDir,
}

impl ProxyBin {
    pub async fn start(routes_toml: &str) -> ProxyBin {
        Self::start_opts(routes_toml, false).await
    }

    /// With `second_provider`, a second oidc-provider peer is configured as provider `other` (same accounts:
    /// its `alice` is a different person from the first peer's).
    pub async fn start_opts(routes_toml: &str, second_provider: bool) -> ProxyBin {
        let (port, reserved) = reserve_port();
        let base = format!("http://localhost:{port}");
        let peer = Peer::start(&[format!("{base}/oauth/callback")]).await;
        let dir = tempfile::tempdir().unwrap();
        let mut routes_toml = routes_toml.to_owned();
        let peer2 = if second_provider {
            let p2 = Peer::start(&[format!("{base}/oauth/callback")]).await;
            let f = dir.path().join("other_secret");
            std::fs::write(&f, CLIENT_SECRET).unwrap();
            routes_toml.push_str(&format!(
                "[[providers]]\nid = \"other\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\n",
                p2.issuer,
                f.display()
            ));
            Some(p2)
        } else {
            None
        };
        let secrets_dir = dir.path().join("secrets");
        let secrets = hero_secrets::FileSecretStore::open(&secrets_dir).unwrap();
        for (k, v) in [
            ("cockpit/FORGE_OAUTH_CLIENT_ID", CLIENT_ID),
            ("cockpit/FORGE_OAUTH_CLIENT_SECRET", CLIENT_SECRET),
            ("cockpit/FORGE_OAUTH_ISSUER", peer.issuer.as_str()),
        ] {
            secrets.set(k, v).await.unwrap();
        }
        let cfg = dir.path().join("hero_proxy.toml");
        std::fs::write(
            &cfg,
            format!(
                "public_scheme = \"http\"\npublic_url = \"{base}\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\nsocket_dir = \"{}\"\nworkers = 1\n{routes_toml}\n",
                dir.path().join("state").display(),
                dir.path().join("sockets").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("proxy.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hero_proxy"))
            .arg("--config")
            .arg(&cfg)
            .env("HERO_PROXY_SECRETS_DIR", &secrets_dir)
            .env("HERO_PROXY_LOG", "info")
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let guard = ProcGuard(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "proxy did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(reserved);
        ProxyBin {
            port,
            base,
            peer,
            peer2,
            secrets,
            log,
            rpc_socket: dir.path().join("sockets/hero_proxy/rpc.sock"),
            _proc: guard,
            _dir: dir,
        }
    }

    pub async fn login(&self, user: &str) -> String {
        login_at(&self.base, &self.peer.issuer, user).await
    }
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `request` as bytes on a fresh connection (so nothing normalises the target on the way) and reads the
/// response until the peer closes (send `Connection: close`) or 10 s pass.
pub async fn raw_request(port: u16, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET <target>` with Host `localhost`, the given extra header lines, `Connection: close`.
pub async fn raw_get(port: u16, target: &str, extra: &str) -> RawResponse {
    raw_request(
        port,
        format!(
            "GET {target} HTTP/1.1\r\nHost: localhost:{port}\r\n{extra}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
}

/// Sends `request` and reads one response: its head, then `Content-Length` bytes of body (none after a 101), with
/// a 10 s deadline; the connection may stay open.
pub async fn raw_one(port: u16, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if head.starts_with("http/1.1 101") || buf.len() >= end + 4 + len {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    RawResponse {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Debian's hypercorn (`python3-hypercorn`: HTTP/1.1, h2c upgrade, HTTP/2, WebSocket) serving
/// tests/peers/asgi_echo.py on an OS-chosen port (read from its log), killed by PID on drop.
pub struct Hypercorn {
    pub port: u16,
    _proc: ProcGuard,
}

impl Hypercorn {
    pub async fn start() -> Hypercorn {
        let mut child = Command::new("/usr/bin/hypercorn")
            .args(["--bind", "127.0.0.1:0", "asgi_echo:app"])
            .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("hypercorn (scripts/install-test-deps.sh: python3-hypercorn)");
        let stderr = child.stderr.take().unwrap();
        let guard = ProcGuard(child);
        let mut lines = BufReader::new(stderr).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(rest) = l.split("Running on http://127.0.0.1:").nth(1) {
                    return rest.split(' ').next().unwrap().parse::<u16>().unwrap();
                }
            }
            panic!("hypercorn exited before listening");
        })
        .await
        .expect("hypercorn did not start within 20 s");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Hypercorn { port, _proc: guard }
    }
}
