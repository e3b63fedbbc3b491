//! SSH client for post-deploy steps: wait until the VM answers SSH, pin its host key, upload a
//! file, run a command with its output streamed line by line.
//!
//! Built on `russh` (pure Rust): the user's private key stays in memory and is never written to
//! disk, and no `ssh` binary or `known_hosts` file is involved. Host key pinning is explicit: the
//! caller passes the fingerprint it stored on first contact (or `None` the first time) and gets
//! back the observed one; a different key is [`SshError::HostKeyChanged`] and authentication is
//! never attempted against it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::ssh_key::HashAlg;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::time::Instant;

use crate::lines::LineSplitter;
use crate::process::shell_quote;

/// Where to connect and as whom.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SshTarget {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Remote user.
    pub user: String,
}

/// Errors of the SSH client. `is_transient()` says whether waiting and retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The private key could not be parsed.
    #[error("invalid SSH private key: {0}")]
    InvalidKey(String),
    /// TCP connect failed (refused, unreachable): the VM is probably still booting.
    #[error("TCP connect to {addr} failed: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// OS error.
        reason: String,
    },
    /// One attempt (TCP + handshake + auth) took longer than its timeout.
    #[error("SSH to {addr} timed out after {after:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The attempt timeout.
        after: Duration,
    },
    /// The SSH protocol failed (banner, key exchange, connection reset…).
    #[error("SSH handshake with {addr} failed: {reason}")]
    Handshake {
        /// `host:port`.
        addr: String,
        /// Cause.
        reason: String,
    },
    /// The host presented a different key than the pinned one. Never retried; needs an operator.
    #[error(
        "host key of {addr} changed: pinned {expected}, presented {observed}; refusing to connect"
    )]
    HostKeyChanged {
        /// `host:port`.
        addr: String,
        /// Pinned fingerprint.
        expected: String,
        /// Presented fingerprint.
        observed: String,
    },
    /// The server refused our key for `user`.
    #[error("SSH public key authentication as {user:?} on {addr} was refused")]
    AuthRejected {
        /// `host:port`.
        addr: String,
        /// Remote user.
        user: String,
    },
    /// Opening a channel or talking on it failed.
    #[error("SSH channel error: {0}")]
    Channel(String),
    /// The upload command exited non-zero.
    #[error("upload to {path} failed with {status}: {stderr}")]
    UploadFailed {
        /// Remote path.
        path: String,
        /// Exit status.
        status: ExitStatus,
        /// stderr of the remote command.
        stderr: String,
    },
    /// [`SshClient::wait_until_ready`] reached its deadline; `last` is the last attempt's error.
    #[error(
        "SSH on {addr} not ready before the deadline ({attempts} attempts); last error: {last}"
    )]
    NotReady {
        /// `host:port`.
        addr: String,
        /// Attempts made.
        attempts: u32,
        /// Last error.
        last: Box<SshError>,
    },
}

impl SshError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            SshError::InvalidKey(_) => "ssh.invalid_key",
            SshError::Connect { .. } => "ssh.connect",
            SshError::Timeout { .. } => "ssh.timeout",
            SshError::Handshake { .. } => "ssh.handshake",
            SshError::HostKeyChanged { .. } => "ssh.host_key_changed",
            SshError::AuthRejected { .. } => "ssh.auth_rejected",
            SshError::Channel(_) => "ssh.channel",
            SshError::UploadFailed { .. } => "ssh.upload_failed",
            SshError::NotReady { .. } => "ssh.not_ready",
        }
    }

    /// Can a later attempt succeed without anyone changing anything? A booting VM refuses TCP or
    /// drops handshakes, so those are transient; a changed host key, a bad key or a refused key
    /// are not.
    pub fn is_transient(&self) -> bool {
        match self {
            SshError::Connect { .. }
            | SshError::Timeout { .. }
            | SshError::Handshake { .. }
            | SshError::Channel(_)
            | SshError::NotReady { .. } => true,
            SshError::InvalidKey(_)
            | SshError::HostKeyChanged { .. }
            | SshError::AuthRejected { .. }
            | SshError::UploadFailed { .. } => false,
        }
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, if the command exited.
    pub code: Option<u32>,
    /// Signal name, if it was killed by a signal.
    pub signal: Option<String>,
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "signal {s}"),
            (None, None) => f.write_str("no exit status (channel closed)"),
        }
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of remote output (without its newline; invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Source stream.
    pub stream: Stream,
    /// Text.
    pub text: String,
}

/// The russh handler: records the presented host key and refuses one that differs from the pin.
struct PinningHandler {
    expected: Option<String>,
    observed: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinningHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let fp = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.fingerprint(HashAlg::Sha256).to_string()
            }
            PublicKeyOrCertificate::Certificate(cert) => {
                cert.public_key().fingerprint(HashAlg::Sha256).to_string()
            }
        };
        let ok = self.expected.as_ref().is_none_or(|e| *e == fp);
        if let Ok(mut slot) = self.observed.lock() {
            *slot = Some(fp);
        }
        Ok(ok)
    }
}

/// An SSH client for one target with one in-memory key and an optional pinned host key.
#[derive(Clone)]
pub struct SshClient {
    target: SshTarget,
    key: Arc<PrivateKey>,
    pinned: Option<String>,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for SshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshClient")
            .field("target", &self.target)
            .field("key", &"<redacted>")
            .field("pinned", &self.pinned)
            .finish()
    }
}

impl SshClient {
    /// A client for `target` authenticating with `private_key_openssh` (OpenSSH PEM, kept in
    /// memory only). `pinned_host_key` is the `SHA256:…` fingerprint stored on first contact, or
    /// `None` to accept and report whatever the host presents. Each connection attempt (TCP +
    /// handshake + auth) is bounded by 20 s; see [`SshClient::with_attempt_timeout`].
    pub fn new(
        target: SshTarget,
        private_key_openssh: &str,
        pinned_host_key: Option<String>,
    ) -> Result<Self, SshError> {
        let key = PrivateKey::from_openssh(private_key_openssh)
            .map_err(|e| SshError::InvalidKey(e.to_string()))?;
        Ok(Self {
            target,
            key: Arc::new(key),
            pinned: pinned_host_key,
            attempt_timeout: Duration::from_secs(20),
        })
    }

    /// Bound each connection attempt to `timeout`.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The target.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    fn addr(&self) -> String {
        if self.target.host.contains(':') {
            format!("[{}]:{}", self.target.host, self.target.port)
        } else {
            format!("{}:{}", self.target.host, self.target.port)
        }
    }

    /// One attempt: TCP connect, SSH handshake, host key check, public key auth.
    pub async fn connect(&self) -> Result<SshSession, SshError> {
        let addr = self.addr();
        match tokio::time::timeout(self.attempt_timeout, self.connect_inner(&addr)).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                addr,
                after: self.attempt_timeout,
            }),
        }
    }

    async fn connect_inner(&self, addr: &str) -> Result<SshSession, SshError> {
        let tcp = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| SshError::Connect {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let observed = Arc::new(Mutex::new(None));
        let handler = PinningHandler {
            expected: self.pinned.clone(),
            observed: observed.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        let connected = client::connect_stream(config, tcp, handler).await;
        let seen = observed.lock().ok().and_then(|g| g.clone());
        let mut handle = match connected {
            Ok(h) => h,
            Err(e) => {
                if let (Some(expected), Some(obs)) = (&self.pinned, &seen) {
                    if expected != obs {
                        return Err(SshError::HostKeyChanged {
                            addr: addr.to_string(),
                            expected: expected.clone(),
                            observed: obs.clone(),
                        });
                    }
                }
                return Err(SshError::Handshake {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let Some(host_fingerprint) = seen else {
            return Err(SshError::Handshake {
                addr: addr.to_string(),
                reason: "server key was never checked".into(),
            });
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| SshError::Handshake {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?
            .flatten();
        let auth = handle
            .authenticate_publickey(
                self.target.user.clone(),
                PrivateKeyWithHashAlg::new(self.key.clone(), hash),
            )
            .await
            .map_err(|e| SshError::Handshake {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        match auth {
            client::AuthResult::Success => {}
            // Only the live server's answer is a refusal. russh reports a connection that closed
            // while waiting for the answer (sshd killed or restarted mid-handshake) as a failure
            // naming no methods, and a real sshd's refusal always names what it still accepts
            // (publickey at least): that case is a dropped handshake, retried like any other,
            // not a key to give up on.
            client::AuthResult::Failure {
                remaining_methods, ..
            } if handle.is_closed() || remaining_methods.is_empty() => {
                return Err(SshError::Handshake {
                    addr: addr.to_string(),
                    reason: "the connection closed during authentication (sshd exited?)".into(),
                });
            }
            client::AuthResult::Failure { .. } => {
                return Err(SshError::AuthRejected {
                    addr: addr.to_string(),
                    user: self.target.user.clone(),
                });
            }
        }
        Ok(SshSession {
            handle,
            host_fingerprint,
        })
    }

    /// Repeat [`SshClient::connect`] every `poll` until it succeeds, a non-transient error occurs
    /// (changed host key, refused key), or `deadline` passes ([`SshError::NotReady`] with the
    /// last error). `on_attempt(n, &err)` is called after each failed attempt, for events.
    pub async fn wait_until_ready(
        &self,
        deadline: Instant,
        poll: Duration,
        mut on_attempt: impl FnMut(u32, &SshError),
    ) -> Result<SshSession, SshError> {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = self
                .clone()
                .with_attempt_timeout(self.attempt_timeout.min(remaining.max(poll)));
            match attempt.connect().await {
                Ok(s) => return Ok(s),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => {
                    on_attempt(attempts, &e);
                    if Instant::now() + poll >= deadline {
                        return Err(SshError::NotReady {
                            addr: self.addr(),
                            attempts,
                            last: Box::new(e),
                        });
                    }
                    tokio::time::sleep(poll).await;
                }
            }
        }
    }
}

/// An authenticated SSH connection.
pub struct SshSession {
    handle: client::Handle<PinningHandler>,
    host_fingerprint: String,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("host_fingerprint", &self.host_fingerprint)
            .finish()
    }
}

impl SshSession {
    /// The host key fingerprint (`SHA256:…`) presented by the server. Store it on first contact and
    /// pass it as the pin next time.
    pub fn host_fingerprint(&self) -> &str {
        &self.host_fingerprint
    }

    /// Run `command` (through the remote user's shell), feeding `stdin` (then EOF) and streaming
    /// output lines to `on_line`. Returns how it ended; a non-zero exit is not an error here.
    pub async fn run_with_stdin(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        mut on_line: impl FnMut(Line),
    ) -> Result<ExitStatus, SshError> {
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| SshError::Channel(e.to_string()))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| SshError::Channel(e.to_string()))?;
        if let Some(data) = stdin {
            channel
                .data(data)
                .await
                .map_err(|e| SshError::Channel(e.to_string()))?;
        }
        channel
            .eof()
            .await
            .map_err(|e| SshError::Channel(e.to_string()))?;
        // Lines are cut at `lines::MAX_LINE`: a remote command printing without a newline must not grow this.
        let mut out = LineSplitter::default();
        let mut err = LineSplitter::default();
        let mut status = ExitStatus {
            code: None,
            signal: None,
        };
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.push(&data, &mut |text| {
                    on_line(Line {
                        stream: Stream::Stdout,
                        text,
                    })
                }),
                ChannelMsg::ExtendedData { data, ext: 1 } => err.push(&data, &mut |text| {
                    on_line(Line {
                        stream: Stream::Stderr,
                        text,
                    })
                }),
                ChannelMsg::ExitStatus { exit_status } => status.code = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    status.signal = Some(format!("{signal_name:?}"))
                }
                _ => {}
            }
        }
        out.finish(&mut |text| {
            on_line(Line {
                stream: Stream::Stdout,
                text,
            })
        });
        err.finish(&mut |text| {
            on_line(Line {
                stream: Stream::Stderr,
                text,
            })
        });
        Ok(status)
    }

    /// Run `command`, streaming its output lines to `on_line`; see [`SshSession::run_with_stdin`].
    pub async fn run(
        &self,
        command: &str,
        on_line: impl FnMut(Line),
    ) -> Result<ExitStatus, SshError> {
        self.run_with_stdin(command, None, on_line).await
    }

    /// Write `contents` to `remote_path` (creating its directory; mode `mode` if given) with
    /// `mkdir -p DIR && cat > PATH` over one exec channel. Idempotent: overwrites.
    pub async fn upload(
        &self,
        remote_path: &str,
        contents: &[u8],
        mode: Option<u32>,
    ) -> Result<(), SshError> {
        let dir = match remote_path.rfind('/') {
            Some(0) => "/".to_string(),
            Some(i) => remote_path[..i].to_string(),
            None => ".".to_string(),
        };
        let tmp = format!("{remote_path}.upload-tmp");
        let mut cmd = format!(
            "mkdir -p {d} && cat > {t}",
            d = shell_quote(&dir),
            t = shell_quote(&tmp)
        );
        if let Some(m) = mode {
            cmd.push_str(&format!(" && chmod {m:o} {}", shell_quote(&tmp)));
        }
        cmd.push_str(&format!(
            " && mv -f {} {}",
            shell_quote(&tmp),
            shell_quote(remote_path)
        ));
        // The last lines only: the VM's side of the channel writes as much stderr as it likes, and
        // every line was kept, so a VM flooding it ran the deployer out of memory (again after each
        // restart, as the job resumed the upload).
        let mut stderr = std::collections::VecDeque::with_capacity(UPLOAD_STDERR_LINES);
        let status = self
            .run_with_stdin(&cmd, Some(contents), |l| {
                if l.stream == Stream::Stderr {
                    if stderr.len() == UPLOAD_STDERR_LINES {
                        stderr.pop_front();
                    }
                    stderr.push_back(l.text)
                }
            })
            .await?;
        let stderr: Vec<String> = stderr.into();
        if !status.success() {
            return Err(SshError::UploadFailed {
                path: remote_path.to_string(),
                status,
                stderr: stderr.join("\n"),
            });
        }
        Ok(())
    }

    /// Close the connection politely.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "bye", "en")
            .await;
    }
}

/// The stderr lines of a failed upload kept for its error: the last ones.
const UPLOAD_STDERR_LINES: usize = 30;

/// One TCP connect attempt to `host:port` bounded by `timeout`: the cheap first probe before the
/// SSH handshake (and how to tell "nothing listens" from "SSH misbehaves").
pub async fn tcp_reachable(host: &str, port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}
