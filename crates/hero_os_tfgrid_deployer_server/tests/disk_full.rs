//! A disk that fills up: the caller is told "disk full" by name (not "internal error"), nothing
//! half-written is left, and the server goes on once space is back. Runs on a small tmpfs; skips
//! with a clear message where mounting one is not permitted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hero_os_tfgrid_deployer_sdk::methods::SecretSet;
use hero_os_tfgrid_deployer_sdk::types::SecretSetParams;
use hero_os_tfgrid_deployer_sdk::{ClientError, ErrorKind};
use support::*;

/// A mounted tmpfs, unmounted (lazily, after whatever ran on it was killed) when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs {
                dir: dir.to_path_buf(),
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros to `path` until the file system refuses.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    // The last partial blocks, byte by byte in small pieces.
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

fn is_disk_full(e: &ClientError) -> bool {
    let ClientError::Rpc(rpc) = e else {
        return false;
    };
    rpc.message.contains("disk full")
        && rpc
            .data
            .as_ref()
            .and_then(|d| d.detail.as_ref())
            .map(|d| d["cause"].clone())
            == Some(serde_json::json!("disk_full"))
}

#[tokio::test]
async fn a_full_disk_is_named_to_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmpfs = match Tmpfs::mount(&data, "6m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_is_named_to_the_caller: cannot mount a tmpfs here ({why}); needs root or CAP_SYS_ADMIN");
            return;
        }
    };
    let server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: "http://127.0.0.1:9".into(),
            extra_env: vec![("HERO_DEPLOYER_FORGE_ATTEMPTS".into(), "1".into())],
        },
    );
    let c = server.client.clone();
    server.set_admin_token("not-a-real-token").await;
    let err = c.create_user("before", None, None).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::ForgeUnavailable), "{err:?}");
    let ballast = data.join("ballast");
    fill(&ballast);

    // The secret store's write.
    let err = c
        .call::<SecretSet>(&SecretSetParams {
            slot: "deployer/forge_admin_token".into(),
            value: "x".repeat(64 * 1024),
        })
        .await
        .unwrap_err();
    assert!(is_disk_full(&err), "{err:?}");

    // The database's: each create_user writes a row and an audit line (and then fails on the
    // unreachable Forge); the disk-full answer comes once sqlite cannot grow its files.
    let mut full = None;
    for i in 0..2000 {
        match c.create_user(&format!("fill-{i}"), None, None).await {
            Err(e) if is_disk_full(&e) => {
                full = Some(e);
                break;
            }
            Err(e) => assert_eq!(e.kind(), Some(ErrorKind::ForgeUnavailable), "{e:?}"),
            Ok(u) => panic!("{u:?}"),
        }
    }
    let full = full.expect("no write ever failed on a full disk");
    assert_eq!(full.kind(), Some(ErrorKind::Internal));

    // Space back: the server goes on.
    std::fs::remove_file(&ballast).unwrap();
    assert!(c.health().await.is_ok());
    let err = c.create_user("after", None, None).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::ForgeUnavailable), "{err:?}");
    drop(server);
    drop(tmpfs);
}
