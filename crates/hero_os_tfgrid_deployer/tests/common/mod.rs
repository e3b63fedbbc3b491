//! What the demo tests share: starting `demo` as a terminal would (leader of its own process
//! group, waiting for Ctrl-C), and guards that leave no process behind when a test fails half-way.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// Live processes whose command line contains `needle` (zombies skipped).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
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

/// Kills, by PID, every process whose command line names the directory (a kept sandbox when a
/// test fails half-way).
pub struct DirReaper(pub PathBuf);

impl Drop for DirReaper {
    fn drop(&mut self) {
        for pid in processes_mentioning(&self.0.display().to_string()) {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A process group killed (SIGKILL to the group) on drop, for a demo a test failed to stop.
pub struct GroupGuard(pub i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0)])
            .status();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `demo` waiting for Ctrl-C, with what it printed up to "Press Ctrl-C".
pub struct RunningDemo {
    pub child: Child,
    pub pgid: i32,
    pub stdout: Vec<String>,
    stderr: Receiver<String>,
    _group: GroupGuard,
}

impl RunningDemo {
    /// Starts `demo <args> --dir <dir>` with `HOME=<dir>` and waits (bounded) until it is ready.
    pub fn start(dir: &Path, args: &[&str]) -> RunningDemo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hero_os_tfgrid_deployer"))
            .arg("demo")
            .args(args)
            .arg("--dir")
            .arg(dir)
            .env("HOME", dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let group = GroupGuard(pgid);
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The demo's stderr reaches EOF when the demo exits (its children log to files).
        let stderr = child.stderr.take().unwrap();
        let (err_tx, err_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            let _ = err_tx.send(s);
        });
        let mut seen = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(180))
                .unwrap_or_else(|e| {
                    let err = err_rx
                        .recv_timeout(Duration::from_millis(200))
                        .unwrap_or_default();
                    panic!("no 'Press Ctrl-C' ({e}); stdout so far: {seen:#?}\nstderr: {err}")
                });
            let done = line.contains("Press Ctrl-C");
            seen.push(line);
            if done {
                break;
            }
        }
        RunningDemo {
            child,
            pgid,
            stdout: seen,
            stderr: err_rx,
            _group: group,
        }
    }

    /// The value of the printed line `  <label>:<spaces><value>`.
    pub fn field(&self, label: &str) -> String {
        let prefix = format!("  {label}:");
        self.stdout
            .iter()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label:?} line in {:#?}", self.stdout))
    }

    /// Sends SIGINT to the demo's group (a terminal's Ctrl-C) and waits (bounded) for it to
    /// decommission and exit; returns its stderr.
    pub fn ctrl_c(mut self) -> String {
        let status = Command::new("kill")
            .args(["-s", "INT", "--", &format!("-{}", self.pgid)])
            .status()
            .unwrap();
        assert!(status.success());
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(120))
            .expect("the demo did not exit within 120 s of SIGINT");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "{exit}\n{stderr}");
        stderr
    }
}
