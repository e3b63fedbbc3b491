//! Typed async client. Keeps a small pool of HTTP/1.1 keep-alive connections to the server's
//! unix socket (or TCP address), so callers can share one `Client` across tasks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method as HttpMethod, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::error::ClientError;
use crate::jobs::*;
use crate::jsonrpc::Response;
use crate::methods::{self, Method};
use crate::types::*;

/// Largest number of idle connections kept for reuse.
const MAX_IDLE: usize = 64;

/// How long a call may take before the client gives up, unless [`Client::with_deadline`] says otherwise: a
/// stopped or wedged server (or a network that drops packets) must not hang the CLI or the dashboard for ever.
/// Generous, because it is a bound, not a target; the methods that are long by nature get more ([`deadline`]).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// Whether a call of `method` only reads, so sending it twice changes nothing (see `Client::request`): the
/// methods declared `reads` ([`crate::methods::READ_METHOD_NAMES`]) and `rpc.discover`.
fn reads_only(method: &str) -> bool {
    method == "rpc.discover" || crate::methods::READ_METHOD_NAMES.contains(&method)
}

/// The deadline of one call of `method`: `base`, plus what the method may legitimately spend waiting — a name
/// claim held by another call of the same user (`users::CLAIM_WAIT` on the server, 300 s), the backend's whole
/// inventory (`reconcile`, through `tofu` on the grid), a fleet-wide probe round (`check_health`), or the
/// long-poll the caller asked for (`job_events`' `wait_ms`).
fn deadline(method: &str, params: &Value, base: Duration) -> Duration {
    const CLAIM: Duration = Duration::from_secs(300);
    match method {
        "deployer.create_user"
        | "deployer.delete_user"
        | "deployer.reset_forge_password"
        | "deployer.provision_vm" => base + CLAIM,
        "deployer.reconcile" => base + Duration::from_secs(15 * 60),
        "deployer.check_health" => base + Duration::from_secs(10 * 60),
        "deployer.job_events" => {
            base + Duration::from_millis(params.get("wait_ms").and_then(Value::as_u64).unwrap_or(0))
        }
        _ => base,
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path, e.g. `~/hero/var/sockets/hero_os_tfgrid_deployer/rpc.sock`.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

impl Endpoint {
    /// Parses `unix:/path`, `/path`, `http://host:port` or `host:port`. Lenient (never fails);
    /// prefer [`Endpoint::from_arg`] for anything a person typed.
    pub fn parse(s: &str) -> Endpoint {
        Endpoint::from_arg(s).unwrap_or_else(|_| Endpoint::Tcp(s.to_owned()))
    }

    /// The one syntax of `--server` for the CLI and the dashboard alike: `unix:/path/rpc.sock`,
    /// a socket path (`/…`, `./…`, `~/…`), `http://host:port` or `host:port`. Anything else
    /// (another scheme, a missing or invalid port, a path after the address) is refused here with
    /// one line naming the accepted forms, instead of surfacing later as a confusing connect error.
    pub fn from_arg(s: &str) -> Result<Endpoint, String> {
        const FORMS: &str =
            "use unix:/path/to/rpc.sock, a socket path, http://host:port or host:port";
        let s = s.trim();
        if s.is_empty() {
            return Err(format!("empty server address; {FORMS}"));
        }
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(format!("unix: needs a socket path; {FORMS}"));
            }
            return Ok(Endpoint::Unix(expand_home(p)));
        }
        if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') {
            return Ok(Endpoint::Unix(expand_home(s)));
        }
        let addr = match s.split_once("://") {
            Some(("http", rest)) => rest.strip_suffix('/').unwrap_or(rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "unsupported scheme {scheme:?} in server address {s:?}: the deployer speaks plain HTTP or a unix socket; {FORMS}"
                ))
            }
            None => s,
        };
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(format!("server address {s:?} has no port; {FORMS}"));
        };
        let host_ok = !host.is_empty()
            && (host.parse::<std::net::IpAddr>().is_ok()
                || (host.starts_with('[') && host.ends_with(']'))
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if !host_ok {
            return Err(format!(
                "invalid host {host:?} in server address {s:?}; {FORMS}"
            ));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Endpoint::Tcp(addr.to_owned())),
            _ => Err(format!(
                "invalid port {port:?} in server address {s:?}; {FORMS}"
            )),
        }
    }
}

/// `~/x` → `$HOME/x`: a shell does this for an unquoted word, but not inside `--server=~/x` or
/// an environment variable.
fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// A cheap-to-clone handle to the deployer server.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    next_id: AtomicU64,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The base of every call's deadline (see [`deadline`]).
    deadline: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            inner: Arc::new(Inner {
                endpoint,
                idle: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                headers: Vec::new(),
                deadline: DEFAULT_DEADLINE,
            }),
        }
    }

    /// The same client with another base deadline for its calls (see [`DEFAULT_DEADLINE`]).
    pub fn with_deadline(&self, base: Duration) -> Client {
        Client {
            inner: Arc::new(Inner {
                endpoint: self.inner.endpoint.clone(),
                idle: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                headers: self.inner.headers.clone(),
                deadline: base,
            }),
        }
    }

    /// A client that sends `X-Hero-User: <user>` with every call, for a trusted front end (the
    /// admin dashboard) acting for the signed-in admin, so the audit log names the person.
    pub fn acting_as(&self, user: &str) -> Result<Client, ClientError> {
        let value = HeaderValue::from_str(user)
            .map_err(|_| ClientError::Protocol(format!("invalid acting user {user:?}")))?;
        let mut headers = self.inner.headers.clone();
        headers.retain(|(n, _)| n.as_str() != "x-hero-user");
        headers.push((HeaderName::from_static("x-hero-user"), value));
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint: self.inner.endpoint.clone(),
                idle: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                headers,
                deadline: self.inner.deadline,
            }),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Calls method `M` with typed params and result.
    pub async fn call<M: Method>(&self, params: &M::Params) -> Result<M::Output, ClientError> {
        let params = serde_json::to_value(params)
            .map_err(|e| ClientError::Protocol(format!("cannot encode params: {e}")))?;
        let result = self.call_raw(M::NAME, params).await?;
        serde_json::from_value(result).map_err(|e| {
            ClientError::Protocol(format!(
                "result of {} does not match the contract: {e}",
                M::NAME
            ))
        })
    }

    /// Calls any method with JSON params; returns the JSON result.
    pub async fn call_raw(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let within = deadline(method, &params, self.inner.deadline);
        let body = json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": id });
        let body = serde_json::to_vec(&body)
            .map_err(|e| ClientError::Protocol(format!("cannot encode request: {e}")))?;
        let (status, bytes) = self
            .bounded(
                within,
                self.request(
                    HttpMethod::POST,
                    "/rpc",
                    Bytes::from(body),
                    reads_only(method),
                ),
            )
            .await?;
        // Not the body: a socket of another service answers with an HTML page, which is noise
        // on a terminal; what the operator needs is "this is not the deployer".
        let response: Response = serde_json::from_slice(&bytes).map_err(|_| {
            ClientError::Protocol(format!(
                "{} answered HTTP {status} with {} bytes that are not JSON-RPC; is it the deployer server's socket or address?",
                self.inner.endpoint,
                bytes.len()
            ))
        })?;
        match (response.result, response.error) {
            (_, Some(error)) => Err(ClientError::Rpc(error)),
            (Some(result), None) => Ok(result),
            (None, None) => Ok(Value::Null),
        }
    }

    /// `GET path`, for `/health`, `/openrpc.json` and `/.well-known/heroservice.json`.
    pub async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
        self.bounded(
            self.inner.deadline,
            self.request(HttpMethod::GET, path, Bytes::new(), true),
        )
        .await
    }

    /// `call` within `within`, connect and answer included.
    async fn bounded<T>(
        &self,
        within: Duration,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(within, call)
            .await
            .unwrap_or_else(|_| {
                Err(self.transport(format!(
                    "no answer within {} s (is the server stopped or overloaded?)",
                    within.as_secs_f64()
                )))
            })
    }

    /// Sends one HTTP request on a pooled connection. When the pooled connection fails, the request is sent once
    /// more on a fresh one only if that cannot make anything happen twice: hyper reports it was never sent (the
    /// connection was already closed), or it only reads (`reads_only`: a second `create_user` or
    /// `reset_forge_password` would act twice, a second `get_user` or `GET /health` is harmless — and is what
    /// a server restarted since the connection was pooled needs).
    async fn request(
        &self,
        method: HttpMethod,
        path: &str,
        body: Bytes,
        reads_only: bool,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let request = self.build(method.clone(), path, body.clone())?;
        let Some(sender) = self.take_idle() else {
            let fresh = self.connect().await?;
            return self.send(fresh, request).await.map_err(|(e, _)| e);
        };
        let again = match self.send(sender, request).await {
            Ok(ok) => return Ok(ok),
            Err((_, Some(unsent))) => unsent,
            Err((_, None)) if reads_only => self.build(method, path, body)?,
            Err((e, None)) => return Err(e),
        };
        let fresh = self.connect().await?;
        self.send(fresh, again).await.map_err(|(e, _)| e)
    }

    fn build(
        &self,
        method: HttpMethod,
        path: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let host = match &self.inner.endpoint {
            Endpoint::Unix(_) => "localhost",
            Endpoint::Tcp(a) => a.as_str(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (n, v) in &self.inner.headers {
            builder = builder.header(n, v);
        }
        builder
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// One exchange on `sender`. On failure, the request comes back when hyper knows it was not sent (the
    /// connection was already closed), so the caller may send it elsewhere.
    async fn send(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), (ClientError, Option<Request<Full<Bytes>>>)> {
        if let Err(e) = sender.ready().await {
            return Err((self.transport(e), Some(request)));
        }
        let response = match sender.try_send_request(request).await {
            Ok(r) => r,
            Err(mut e) => {
                let unsent = e.take_message();
                return Err((self.transport(e.into_error()), unsent));
            }
        };
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| (self.transport(e), None))?
            .to_bytes();
        self.put_idle(sender);
        Ok((status, bytes))
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.inner.idle.lock().ok()?;
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.inner.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        match &self.inner.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| self.transport(e))?;
                self.handshake(stream).await
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| self.transport(e))?;
                let _ = stream.set_nodelay(true);
                self.handshake(stream).await
            }
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn transport(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            endpoint: self.inner.endpoint.to_string(),
            reason: e.to_string(),
        }
    }
}

/// Convenience wrappers named like the methods.
impl Client {
    pub async fn create_user(
        &self,
        username: &str,
        display_name: Option<&str>,
        email: Option<&str>,
    ) -> Result<CreateUserResult, ClientError> {
        self.call::<methods::CreateUser>(&CreateUserParams {
            username: username.to_owned(),
            display_name: display_name.map(str::to_owned),
            email: email.map(str::to_owned),
            discard_if_refused: false,
        })
        .await
    }

    pub async fn get_user(&self, user_id: UserId) -> Result<User, ClientError> {
        self.call::<methods::GetUser>(&UserIdParams { user_id })
            .await
    }

    pub async fn find_user(&self, username: &str) -> Result<User, ClientError> {
        self.call::<methods::FindUser>(&FindUserParams {
            username: username.to_owned(),
        })
        .await
    }

    pub async fn list_users(&self, params: &ListUsersParams) -> Result<UsersPage, ClientError> {
        self.call::<methods::ListUsers>(params).await
    }

    pub async fn delete_user(&self, user_id: UserId) -> Result<DeleteUserResult, ClientError> {
        self.call::<methods::DeleteUser>(&UserIdParams { user_id })
            .await
    }

    pub async fn reveal_initial_password(
        &self,
        user_id: UserId,
    ) -> Result<RevealPasswordResult, ClientError> {
        self.call::<methods::RevealInitialPassword>(&UserIdParams { user_id })
            .await
    }

    pub async fn list_events(&self, params: &ListEventsParams) -> Result<EventsPage, ClientError> {
        self.call::<methods::ListEvents>(params).await
    }

    pub async fn server_info(&self) -> Result<ServerInfo, ClientError> {
        self.call::<methods::GetServerInfo>(&NoParams {}).await
    }

    /// `GET /health`, decoded.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let (status, body) = self.get("/health").await?;
        if !status.is_success() {
            return Err(ClientError::Protocol(format!(
                "/health answered HTTP {status}"
            )));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /openrpc.json`, as JSON.
    pub async fn openrpc(&self) -> Result<Value, ClientError> {
        let (_, body) = self.get("/openrpc.json").await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn provision_vm(
        &self,
        user_id: UserId,
        options: Option<ProvisionOptions>,
    ) -> Result<Job, ClientError> {
        self.call::<methods::ProvisionVm>(&ProvisionVmParams { user_id, options })
            .await
    }

    pub async fn decommission_vm(&self, user_id: UserId) -> Result<Job, ClientError> {
        self.call::<methods::DecommissionVm>(&UserIdParams { user_id })
            .await
    }

    pub async fn get_job(&self, job_id: JobId) -> Result<Job, ClientError> {
        self.call::<methods::GetJob>(&JobIdParams { job_id }).await
    }

    pub async fn list_jobs(&self, params: &ListJobsParams) -> Result<JobsPage, ClientError> {
        self.call::<methods::ListJobs>(params).await
    }

    pub async fn cancel_job(&self, job_id: JobId) -> Result<Job, ClientError> {
        self.call::<methods::CancelJob>(&JobIdParams { job_id })
            .await
    }

    pub async fn retry_job(&self, job_id: JobId) -> Result<Job, ClientError> {
        self.call::<methods::RetryJob>(&JobIdParams { job_id })
            .await
    }

    /// One long-poll: events after `after_seq`, waiting up to `wait_ms` for new ones.
    pub async fn job_events(
        &self,
        job_id: JobId,
        after_seq: i64,
        wait_ms: u32,
    ) -> Result<JobEventsPage, ClientError> {
        self.call::<methods::JobEvents>(&JobEventsParams {
            job_id,
            after_seq,
            wait_ms,
            limit: None,
        })
        .await
    }

    /// Follows a job to its end, calling `on_event` for every event (replayed from the start),
    /// and returns the final job.
    pub async fn follow_job(
        &self,
        job_id: JobId,
        mut on_event: impl FnMut(&JobEvent),
    ) -> Result<Job, ClientError> {
        let mut after = 0;
        loop {
            let page = self.job_events(job_id, after, 25_000).await?;
            for e in &page.events {
                on_event(e);
            }
            after = page.last_seq;
            if page.done {
                return self.get_job(job_id).await;
            }
        }
    }

    pub async fn get_vm(&self, user_id: UserId) -> Result<VmDetails, ClientError> {
        self.call::<methods::GetVm>(&UserIdParams { user_id }).await
    }

    /// `deployer.repair_vm`: a repair job on the user's ready VM.
    pub async fn repair_vm(&self, user_id: UserId) -> Result<Job, ClientError> {
        self.call::<methods::RepairVm>(&UserIdParams { user_id })
            .await
    }

    /// `deployer.redeploy_vm`: the user's ready VM runs `profile` from now on.
    pub async fn redeploy_vm(&self, user_id: UserId, profile: &str) -> Result<Job, ClientError> {
        self.call::<methods::RedeployVm>(&RedeployVmParams {
            user_id,
            profile: profile.to_owned(),
        })
        .await
    }

    /// `deployer.extend_vm`: `days` later, or never (`days: None`).
    pub async fn extend_vm(
        &self,
        user_id: UserId,
        days: Option<u32>,
    ) -> Result<VmRecord, ClientError> {
        self.call::<methods::ExtendVm>(&ExtendVmParams {
            user_id,
            days,
            never: days.is_none(),
        })
        .await
    }

    /// `deployer.list_vms`: every live VM with its health.
    pub async fn list_vms(&self, filter: Option<String>) -> Result<VmList, ClientError> {
        self.call::<methods::ListVms>(&ListVmsParams { filter })
            .await
    }

    /// `deployer.check_health`: probe now (one user's VM, or every ready one).
    pub async fn check_health(&self, user_id: Option<UserId>) -> Result<VmList, ClientError> {
        self.call::<methods::CheckHealth>(&CheckHealthParams { user_id })
            .await
    }

    pub async fn export_ssh_key(&self, user_id: UserId) -> Result<SshKeyExport, ClientError> {
        self.call::<methods::ExportSshKey>(&UserIdParams { user_id })
            .await
    }

    pub async fn vm_ssh_target(&self, user_id: UserId) -> Result<VmSshAccess, ClientError> {
        self.call::<methods::VmSshTarget>(&UserIdParams { user_id })
            .await
    }

    pub async fn reset_forge_password(
        &self,
        user_id: UserId,
    ) -> Result<ResetPasswordResult, ClientError> {
        self.call::<methods::ResetForgePassword>(&UserIdParams { user_id })
            .await
    }

    pub async fn forget_vm(
        &self,
        user_id: UserId,
        force: bool,
    ) -> Result<ForgetVmResult, ClientError> {
        self.call::<methods::ForgetVm>(&ForgetVmParams { user_id, force })
            .await
    }

    pub async fn reconcile(&self, fix: bool) -> Result<ReconcileReport, ClientError> {
        self.call::<methods::Reconcile>(&ReconcileParams { fix })
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// Every method whose server side waits for a user's name claim (`claim_name`: create, delete, password
    /// reset, deploy) is given that wait on top of the base deadline: `vm deploy` behind a `reconcile --fix`
    /// timed out at 120 s as "cannot reach the server" while the server went on and made the job.
    #[test]
    fn calls_that_wait_for_a_name_claim_get_the_claim_wait() {
        let base = Duration::from_secs(120);
        for m in [
            "deployer.create_user",
            "deployer.delete_user",
            "deployer.reset_forge_password",
            "deployer.provision_vm",
        ] {
            assert_eq!(
                deadline(m, &Value::Null, base),
                base + Duration::from_secs(300),
                "{m}"
            );
        }
        assert_eq!(deadline("deployer.get_user", &Value::Null, base), base);
    }

    #[test]
    fn server_addresses_have_one_syntax() {
        let ok: &[(&str, Endpoint)] = &[
            ("unix:/run/rpc.sock", Endpoint::Unix("/run/rpc.sock".into())),
            ("/run/rpc.sock", Endpoint::Unix("/run/rpc.sock".into())),
            ("./rpc.sock", Endpoint::Unix("./rpc.sock".into())),
            (
                "http://127.0.0.1:7711",
                Endpoint::Tcp("127.0.0.1:7711".into()),
            ),
            (
                "http://127.0.0.1:7711/",
                Endpoint::Tcp("127.0.0.1:7711".into()),
            ),
            ("127.0.0.1:7711", Endpoint::Tcp("127.0.0.1:7711".into())),
            ("localhost:7711", Endpoint::Tcp("localhost:7711".into())),
            ("[::1]:7711", Endpoint::Tcp("[::1]:7711".into())),
        ];
        for (arg, want) in ok {
            assert_eq!(&Endpoint::from_arg(arg).unwrap(), want, "{arg}");
        }
        let bad: &[(&str, &str)] = &[
            ("ftp://x", "unsupported scheme \"ftp\""),
            ("https://x:443", "unsupported scheme \"https\""),
            ("http://x", "has no port"),
            ("x", "has no port"),
            ("http://x:port", "invalid port"),
            ("http://x:0", "invalid port"),
            ("http://x:70000", "invalid port"),
            ("http://x:80/rpc", "invalid port"),
            ("http://:80", "invalid host"),
            ("a b:80", "invalid host"),
            ("unix:", "needs a socket path"),
            ("", "empty"),
        ];
        for (arg, want) in bad {
            let e = Endpoint::from_arg(arg).unwrap_err();
            assert!(e.contains(want), "{arg}: {e}");
            assert!(!e.contains('\n'), "{arg}: {e}");
        }
    }
}
