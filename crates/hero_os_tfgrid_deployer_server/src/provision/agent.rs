//! How the pipeline talks to a VM after deploy: SSH (wait, upload, run) and HTTP (health through
//! the gateway). A trait so the benchmark can measure the orchestrator alone against a stand-in;
//! the server uses [`SshHttpAgent`] (russh + reqwest), which the integration tests drive against
//! real sshd and the real local gateway.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_backends::{SshClient, SshError, SshTarget, Stream};
use tokio::time::Instant;

use super::steps::StepError;

/// Callback for a failed SSH readiness attempt: `(attempt, reason)`.
pub type AttemptFn<'a> = &'a (dyn Fn(u32, &str) + Send + Sync);
/// Callback for a line of remote output: `(line, is_stderr)`.
pub type LineFn<'a> = &'a (dyn Fn(&str, bool) + Send + Sync);

/// An SSH identity and destination.
pub struct SshAccess<'a> {
    pub target: &'a SshTarget,
    pub private_key: &'a str,
    /// Host key fingerprint pinned on first contact.
    pub pinned: Option<String>,
}

#[async_trait]
pub trait VmAgent: Send + Sync {
    /// Polls until SSH answers and authenticates; returns the host key fingerprint.
    async fn wait_ssh(
        &self,
        access: &SshAccess<'_>,
        deadline: Instant,
        poll: Duration,
        on_attempt: AttemptFn<'_>,
    ) -> Result<String, StepError>;
    async fn upload(
        &self,
        access: &SshAccess<'_>,
        path: &str,
        contents: &[u8],
        mode: Option<u32>,
    ) -> Result<(), StepError>;
    /// Runs a command; returns its exit code (`None` when killed by a signal).
    async fn run(
        &self,
        access: &SshAccess<'_>,
        command: &str,
        on_line: LineFn<'_>,
    ) -> Result<Option<u32>, StepError>;
    /// Runs a command with `stdin` fed to it (then EOF): how a secret reaches a VM, never in the
    /// command line.
    async fn run_with_stdin(
        &self,
        access: &SshAccess<'_>,
        command: &str,
        stdin: &[u8],
        on_line: LineFn<'_>,
    ) -> Result<Option<u32>, StepError>;
    /// `GET url`, connecting to `connect_addr` when the host name does not resolve (local
    /// gateway); returns the HTTP status.
    async fn http_status(&self, url: &str, connect_addr: Option<&str>) -> Result<u16, StepError>;
    /// `GET url` without following redirects: the status and the `Location` header, for walking
    /// the sign-in redirects of the VM's SSO edge.
    async fn http_get(
        &self,
        url: &str,
        connect_addr: Option<&str>,
    ) -> Result<HttpAnswer, StepError>;
}

/// What [`VmAgent::http_get`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub location: Option<String>,
}

/// The longest any one HTTP request of the agent may take (connect, TLS, answer): a gateway
/// that holds a request open cannot hold a step or a health round with it.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The real agent.
pub struct SshHttpAgent;

fn ssh_err(e: SshError) -> StepError {
    StepError {
        code: e.code().to_owned(),
        transient: e.is_transient(),
        message: e.to_string(),
    }
}

impl SshHttpAgent {
    fn client(access: &SshAccess<'_>) -> Result<SshClient, StepError> {
        SshClient::new(
            access.target.clone(),
            access.private_key,
            access.pinned.clone(),
        )
        .map_err(ssh_err)
    }
}

#[async_trait]
impl VmAgent for SshHttpAgent {
    async fn wait_ssh(
        &self,
        access: &SshAccess<'_>,
        deadline: Instant,
        poll: Duration,
        on_attempt: AttemptFn<'_>,
    ) -> Result<String, StepError> {
        let client = Self::client(access)?;
        let session = client
            .wait_until_ready(deadline, poll, |n, e| on_attempt(n, &e.to_string()))
            .await
            .map_err(|e| {
                // Readiness already retried until the deadline: another step attempt would only
                // repeat the wait.
                let mut se = ssh_err(e);
                se.transient = false;
                se
            })?;
        let fp = session.host_fingerprint().to_owned();
        session.close().await;
        Ok(fp)
    }

    async fn upload(
        &self,
        access: &SshAccess<'_>,
        path: &str,
        contents: &[u8],
        mode: Option<u32>,
    ) -> Result<(), StepError> {
        let session = Self::client(access)?.connect().await.map_err(ssh_err)?;
        let r = session.upload(path, contents, mode).await.map_err(ssh_err);
        session.close().await;
        r
    }

    async fn run(
        &self,
        access: &SshAccess<'_>,
        command: &str,
        on_line: LineFn<'_>,
    ) -> Result<Option<u32>, StepError> {
        let session = Self::client(access)?.connect().await.map_err(ssh_err)?;
        let status = session
            .run(command, |l| on_line(&l.text, l.stream == Stream::Stderr))
            .await
            .map_err(ssh_err);
        session.close().await;
        Ok(status?.code)
    }

    async fn run_with_stdin(
        &self,
        access: &SshAccess<'_>,
        command: &str,
        stdin: &[u8],
        on_line: LineFn<'_>,
    ) -> Result<Option<u32>, StepError> {
        let session = Self::client(access)?.connect().await.map_err(ssh_err)?;
        let status = session
            .run_with_stdin(command, Some(stdin), |l| {
                on_line(&l.text, l.stream == Stream::Stderr)
            })
            .await
            .map_err(ssh_err);
        session.close().await;
        Ok(status?.code)
    }

    async fn http_status(&self, url: &str, connect_addr: Option<&str>) -> Result<u16, StepError> {
        Ok(self.http_get(url, connect_addr).await?.status)
    }

    async fn http_get(
        &self,
        url: &str,
        connect_addr: Option<&str>,
    ) -> Result<HttpAnswer, StepError> {
        let mut builder = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(addr) = connect_addr {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| StepError::fatal("health.url", format!("bad URL {url}: {e}")))?;
            let host = parsed.host_str().unwrap_or_default().to_owned();
            let sock: SocketAddr = addr.parse().map_err(|e| {
                StepError::fatal("health.url", format!("bad connect address {addr}: {e}"))
            })?;
            builder = builder.resolve(&host, sock);
        }
        let client = builder
            .build()
            .map_err(|e| StepError::fatal("health.client", e.to_string()))?;
        match client.get(url).send().await {
            Ok(resp) => Ok(HttpAnswer {
                status: resp.status().as_u16(),
                location: resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            }),
            Err(e) => Err(StepError::transient(
                "health.unreachable",
                format!("GET {url} failed: {e}"),
            )),
        }
    }
}
