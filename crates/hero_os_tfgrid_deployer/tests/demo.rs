//! `demo --no-wait` end to end with the real binaries (dev Forge, server, CLI): brings everything
//! up on embedded defaults, provisions, prints the URL and credentials, decommissions, stops the
//! children, and leaves no process behind. Needs the workspace binaries built (scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .contains(needle)
            {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn demo_provisions_prints_the_url_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
        .args([
            "demo",
            "alice",
            "--no-wait",
            "--gateway-port",
            &port.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("URL:            http://alice.localhost:{port}/")),
        "{stdout}"
    );
    assert!(stdout.contains("Forge username: alice"), "{stdout}");
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  Forge password: "))
        .unwrap();
    assert_eq!(password.len(), 32, "{stdout}");
    assert!(stderr.contains("step 9/10 verify_health: done"), "{stderr}");
    assert!(
        stderr.contains("step 3/3 mark_decommissioned: done"),
        "{stderr}"
    );
    // Forge, server and the sandbox are gone.
    let needle = dir.path().display().to_string();
    assert!(
        processes_mentioning(&needle).is_empty(),
        "left behind: {:?}",
        processes_mentioning(&needle)
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "gateway still listening"
    );
}
