//! The `hero_devforge` binary itself: the listen line, graceful SIGTERM shutdown, and no secret on
//! stdout/stderr of the operator commands.

// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hero_devforge");

/// Kills the child by PID if the test did not stop it itself.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn operator_commands_never_print_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "Operator-Password-123\n").unwrap();
    let tok = dir.path().join("tok");
    let out = Command::new(BIN)
        .args(["seed-admin", "--username", "root", "--data-dir"])
        .arg(dir.path().join("d"))
        .arg("--token-out")
        .arg(&tok)
        .arg("--password-file")
        .arg(&pw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(&tok).unwrap();
    assert_eq!(token.len(), 40);
    let app = dir.path().join("app.json");
    let out2 = Command::new(BIN)
        .args([
            "add-oauth-app",
            "--name",
            "cockpit",
            "--redirect-uri",
            "https://x.example/oauth/callback",
            "--confidential",
            "--data-dir",
        ])
        .arg(dir.path().join("d"))
        .arg("--secret-out")
        .arg(&app)
        .output()
        .unwrap();
    assert!(
        out2.status.success(),
        "{}",
        String::from_utf8_lossy(&out2.stderr)
    );
    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&app).unwrap()).unwrap();
    let secret = creds["client_secret"].as_str().unwrap();
    let out3 = Command::new(BIN)
        .args([
            "add-member",
            "--username",
            "root",
            "--group",
            "org1:owners",
            "--data-dir",
        ])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(
        out3.status.success(),
        "{}",
        String::from_utf8_lossy(&out3.stderr)
    );
    for o in [&out, &out2, &out3] {
        for stream in [&o.stdout, &o.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains(&token), "token printed: {text}");
            assert!(
                !text.contains("Operator-Password-123"),
                "password printed: {text}"
            );
            assert!(!text.contains(secret), "client secret printed: {text}");
        }
    }
    // A too-short password file is refused.
    std::fs::write(&pw, "short").unwrap();
    let out = Command::new(BIN)
        .args(["seed-admin", "--username", "root2", "--data-dir"])
        .arg(dir.path().join("d"))
        .arg("--token-out")
        .arg(dir.path().join("tok2"))
        .arg("--password-file")
        .arg(&pw)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[cfg(unix)]
#[test]
fn serve_prints_listen_line_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--issuer-trailing-slash",
            "false",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let guard = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
        // Anything more on stdout would break the one-line contract.
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        assert!(rest.is_empty(), "extra stdout: {rest}");
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"));
    let addr = url.trim_start_matches("http://");
    // Plain HTTP/1.0 request with std only.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::Write;
    s.write_all(b"GET /.well-known/openid-configuration HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(resp.contains(&format!("\"issuer\":\"{url}\"")), "{resp}");

    let mut guard = guard;
    let pid = guard.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        // Poll the exit status with a deadline (there is no portable wait-with-timeout).
        std::thread::park_timeout(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// Starts `serve` on port 0 in `dir` and returns the guard and base URL.
fn start(dir: &std::path::Path) -> (ChildGuard, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    (
        guard,
        line.strip_prefix("listening on ").unwrap().to_string(),
    )
}

fn get(url: &str, path: &str) -> String {
    use std::io::Write;
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn signing_key_is_generated_once_and_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let kid = |resp: &str| {
        let body = resp.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["keys"][0]["kid"].as_str().unwrap().to_string()
    };
    let (g1, url1) = start(dir.path());
    let first = get(&url1, "/login/oauth/keys");
    assert!(first.starts_with("HTTP/1.0 200"), "{first}");
    drop(g1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("oauth2_jwt_rsa.pem")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let (_g2, url2) = start(dir.path());
    let second = get(&url2, "/login/oauth/keys");
    assert_eq!(kid(&first), kid(&second));
}
