//! The SSH client against a REAL OpenSSH sshd (Debian openssh-server) on 127.0.0.1:<free port>.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{current_user, user_key, SshdGuard};
use hero_os_tfgrid_deployer_backends::process::free_loopback_port;
use hero_os_tfgrid_deployer_backends::sshkey::public_key_fingerprint;
use hero_os_tfgrid_deployer_backends::{SshClient, SshError, SshTarget, Stream};
use tokio::time::Instant;

fn target(port: u16) -> SshTarget {
    SshTarget {
        host: "127.0.0.1".into(),
        port,
        user: current_user(),
    }
}

#[tokio::test]
async fn first_contact_run_and_upload() {
    let key = user_key(1);
    let sshd = SshdGuard::start(&key).await;
    let host_fp =
        public_key_fingerprint(&std::fs::read_to_string(sshd.host_pub()).unwrap()).unwrap();

    let client = SshClient::new(target(sshd.port), key.private_openssh(), None).unwrap();
    let dbg = format!("{client:?}");
    assert!(
        dbg.contains("<redacted>") && !dbg.contains("PRIVATE KEY"),
        "{dbg}"
    );
    let session = client.connect().await.unwrap();
    assert_eq!(
        session.host_fingerprint(),
        host_fp,
        "observed key is reported"
    );

    let mut lines = Vec::new();
    let status = session
        .run(
            "echo hello; echo oops >&2; printf 'no newline'; exit 3",
            |l| lines.push(l),
        )
        .await
        .unwrap();
    assert_eq!(status.code, Some(3));
    assert!(!status.success());
    let out: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.text.as_str())
        .collect();
    let err: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == Stream::Stderr)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(out, vec!["hello", "no newline"]);
    assert_eq!(err, vec!["oops"]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a b/c/services.toml");
    let body = b"[x]\nname = \"it's\"\n".repeat(5000);
    session
        .upload(path.to_str().unwrap(), &body, Some(0o600))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Idempotent overwrite.
    session
        .upload(path.to_str().unwrap(), b"v2", None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"v2");
    session.close().await;

    // Pinned to the right key: fine.
    let pinned = SshClient::new(target(sshd.port), key.private_openssh(), Some(host_fp)).unwrap();
    let s = pinned.connect().await.unwrap();
    let st = s.run("true", |_| {}).await.unwrap();
    assert!(st.success());
}

#[tokio::test]
async fn changed_host_key_is_refused() {
    let key = user_key(2);
    let sshd = SshdGuard::start(&key).await;
    let other = user_key(99);
    let client = SshClient::new(
        target(sshd.port),
        key.private_openssh(),
        Some(other.fingerprint().to_string()),
    )
    .unwrap();
    let err = client.connect().await.unwrap_err();
    match &err {
        SshError::HostKeyChanged {
            expected, observed, ..
        } => {
            assert_eq!(expected, other.fingerprint());
            assert!(observed.starts_with("SHA256:"));
        }
        e => panic!("expected HostKeyChanged, got {e:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(err.code(), "ssh.host_key_changed");
    // wait_until_ready gives up at once on it.
    let err = client
        .wait_until_ready(
            Instant::now() + Duration::from_secs(30),
            Duration::from_millis(50),
            |_, _| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::HostKeyChanged { .. }));
}

#[tokio::test]
async fn wrong_user_key_is_rejected_not_transient() {
    let key = user_key(3);
    let sshd = SshdGuard::start(&key).await;
    let stranger = user_key(4);
    let client = SshClient::new(target(sshd.port), stranger.private_openssh(), None).unwrap();
    let err = client.connect().await.unwrap_err();
    assert!(matches!(err, SshError::AuthRejected { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn waits_until_sshd_comes_up_or_the_deadline() {
    let key = user_key(5);
    // Nothing listens: NotReady after the deadline, with Connect as the last error.
    let port = free_loopback_port().unwrap();
    let client = SshClient::new(target(port), key.private_openssh(), None).unwrap();
    let mut attempts = 0;
    let err = client
        .wait_until_ready(
            Instant::now() + Duration::from_millis(400),
            Duration::from_millis(50),
            |_, _| attempts += 1,
        )
        .await
        .unwrap_err();
    match &err {
        SshError::NotReady { last, .. } => assert!(matches!(**last, SshError::Connect { .. })),
        e => panic!("{e:?}"),
    }
    assert!(err.is_transient());
    assert!(attempts >= 2);

    // sshd comes up on that port while we wait.
    let dir = tempfile::tempdir().unwrap();
    let waiter = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .wait_until_ready(
                    Instant::now() + Duration::from_secs(30),
                    Duration::from_millis(50),
                    |_, _| {},
                )
                .await
        }
    });
    let sshd = SshdGuard::start_on(dir.path(), port, &key).await;
    let session = waiter.await.unwrap().unwrap();
    let st = session.run("exit 0", |_| {}).await.unwrap();
    assert!(st.success());
    drop(sshd);
}

/// A VM that floods stderr during an upload: the error keeps its last lines only. Every line was kept before, so
/// the VM's side of the channel decided how much of the deployer's memory one upload took. The flood comes from a
/// forced command in `authorized_keys` (OpenSSH's `command=`), run instead of the upload's own.
#[tokio::test]
async fn an_upload_keeps_only_the_last_lines_of_a_flood_of_stderr() {
    let key = user_key(3);
    let dir = tempfile::tempdir().unwrap();
    let port = free_loopback_port().unwrap();
    let forced = format!(
        "command=\"seq 1 200000 >&2; exit 1\" {}",
        key.public_openssh().trim()
    );
    let _sshd = SshdGuard::start_with_line(dir.path(), port, &forced).await;
    let session = SshClient::new(target(port), key.private_openssh(), None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = session
        .upload("/tmp/never-written", b"x", None)
        .await
        .unwrap_err();
    match &err {
        SshError::UploadFailed { stderr, .. } => {
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 30, "{}", &stderr[..stderr.len().min(200)]);
            assert_eq!(lines.last(), Some(&"200000"));
        }
        e => panic!("{e:?}"),
    }
}
