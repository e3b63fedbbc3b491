//! A REAL OpenSSH sshd killed by PID in the middle of the SSH handshake (key exchange done,
//! authentication not yet answered) is a transient failure, not a refused key: a retry against a
//! restarted sshd gets in with the same key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{current_user, user_key, SshdGuard};
use hero_os_tfgrid_deployer_backends::process::{free_loopback_port, wait_gone};
use hero_os_tfgrid_deployer_backends::{SshClient, SshError, SshTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// SSH_MSG_NEWKEYS: the client's last clear-text packet; what it sends next is authentication.
const MSG_NEWKEYS: u8 = 21;

/// The processes of an sshd: the listener and the per-connection ones below it.
fn sshd_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) && !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        i += 1;
    }
    pids
}

/// Forwards one client connection to sshd, reading the client's clear-text packets; once the
/// client has sent NEWKEYS and `let_through` more reads, it holds the next one back and kills
/// sshd (every process of it, by PID), so the client waits for an answer from a dead server.
/// Returns once sshd's side of the connection is closed and that was passed on to the client.
async fn kill_sshd_mid_handshake(
    listener: TcpListener,
    sshd_port: u16,
    sshd_pid: u32,
    let_through: usize,
) {
    let (client, _) = listener.accept().await.unwrap();
    let server = TcpStream::connect(("127.0.0.1", sshd_port)).await.unwrap();
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    });
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = client_r.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client gave up before the key exchange finished");
        seen.extend_from_slice(&buf[..n]);
        let before = seen.len() - n;
        let end = newkeys_end(&seen);
        server_w
            .write_all(&seen[before..end.unwrap_or(seen.len()).max(before)])
            .await
            .unwrap();
        if let Some(end) = end {
            assert_eq!(
                end,
                seen.len(),
                "the client sent more than NEWKEYS in one go"
            );
            break;
        }
    }
    for _ in 0..let_through {
        let n = client_r.read(&mut buf).await.unwrap();
        assert!(n > 0);
        server_w.write_all(&buf[..n]).await.unwrap();
    }
    // The client's next packet is (part of) its authentication: sshd dies before it.
    let n = client_r.read(&mut buf).await.unwrap();
    assert!(n > 0);
    let tree = sshd_tree(sshd_pid);
    for pid in &tree {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for pid in &tree {
        assert!(
            wait_gone(*pid, Duration::from_secs(10)).await,
            "sshd {pid} survived SIGKILL"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), down)
        .await
        .expect("sshd's side of the connection closed after its death")
        .unwrap();
    drop(client_r);
}

/// Where the client's NEWKEYS packet ends in `bytes` (banner line first), if it is complete.
fn newkeys_end(bytes: &[u8]) -> Option<usize> {
    let banner_end = bytes.windows(2).position(|w| w == b"\r\n")? + 2;
    let mut pos = banner_end;
    loop {
        let len = u32::from_be_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?) as usize;
        let end = pos + 4 + len;
        let msg = *bytes.get(pos + 5)?;
        if bytes.len() < end {
            return None;
        }
        if msg == MSG_NEWKEYS {
            return Some(end);
        }
        pos = end;
    }
}

fn target(port: u16) -> SshTarget {
    SshTarget {
        host: "127.0.0.1".into(),
        port,
        user: current_user(),
    }
}

async fn sshd_dies_after(let_through: usize) {
    let key = user_key(21 + let_through as u64);
    let dir = tempfile::tempdir().unwrap();
    let port = free_loopback_port().unwrap();
    let sshd = SshdGuard::start_on(dir.path(), port, &key).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let proxy = tokio::spawn(kill_sshd_mid_handshake(
        listener,
        port,
        sshd.pid,
        let_through,
    ));

    let client = SshClient::new(target(proxy_port), key.private_openssh(), None)
        .unwrap()
        .with_attempt_timeout(Duration::from_secs(20));
    let err = client.connect().await.unwrap_err();
    proxy.await.unwrap();
    assert!(
        !matches!(err, SshError::AuthRejected { .. }),
        "a dead sshd is reported as a refused key: {err:?}"
    );
    assert!(err.is_transient(), "{err:?} is not retried");

    // The retry the step would make, once sshd is back, gets in with the same key.
    drop(sshd);
    let _back = SshdGuard::start_on(dir.path(), port, &key).await;
    let direct = SshClient::new(target(port), key.private_openssh(), None).unwrap();
    let session = direct
        .wait_until_ready(
            Instant::now() + Duration::from_secs(30),
            Duration::from_millis(50),
            |_, _| {},
        )
        .await
        .unwrap();
    assert!(session.run("exit 0", |_| {}).await.unwrap().success());
}

#[tokio::test]
async fn sshd_killed_before_the_service_request_is_answered_is_transient() {
    sshd_dies_after(0).await;
}

#[tokio::test]
async fn sshd_killed_before_the_publickey_request_is_answered_is_transient() {
    sshd_dies_after(1).await;
}
