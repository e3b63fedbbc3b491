//! The `hero_compute` backend: a JSON-RPC 2.0 client (`POST /rpc`, HTTP/1.1 over hero_compute's
//! unix socket) for `ComputeService`.
//!
//! hero_compute's method shapes are not published; every assumption is in [`assumed`]. At start
//! the client reads `rpc.discover` and refuses ([`BackendError::MissingMethods`], naming each
//! missing method) unless every method it needs is offered.
//!
//! hero_compute has no gateway getter that we know of, so the gateways deployed through this client
//! are remembered by it, in a file (`HeroComputeConfig::gateways_file`) that outlives the process.
//! Why a file: remembered in memory only, every gateway was forgotten at a restart — `get_gateway`
//! answered "none" (and `vm forget` dropped the record of a gateway still serving), inventory
//! listed none (and reconcile called every live one missing).

pub mod assumed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::compute::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Resource, ResourceKind,
    ResourceName, VmInfo, VmRequest,
};
use crate::peer_body;
use crate::ssh::SshTarget;

/// The longest JSON-RPC answer accepted from hero_compute (its answers are a VM's record, a few kilobytes; more
/// is a broken peer, [`peer_body`]).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Configuration of the hero_compute client.
#[derive(Debug, Clone)]
pub struct HeroComputeConfig {
    /// hero_compute's RPC socket.
    pub socket_path: PathBuf,
    /// Per-call time limit.
    pub timeout: Duration,
    /// SSH user on the VMs.
    pub ssh_user: String,
    /// Remote manifest path.
    pub manifest_path: String,
    /// Remote directory for the bootstrap.
    pub work_dir: String,
    /// VM web port the gateway forwards to.
    pub web_port: u16,
    /// Where the gateways this client deployed are remembered (see the module docs); `None` keeps them in
    /// memory only (tests that do not restart).
    pub gateways_file: Option<PathBuf>,
}

impl HeroComputeConfig {
    /// Defaults with `socket_path` (see [`default_socket_path`]).
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            gateways_file: None,
            socket_path: socket_path.into(),
            timeout: Duration::from_secs(120),
            ssh_user: "root".into(),
            manifest_path: "/home/driver/hero/cfg/cockpit/services.toml".into(),
            work_dir: "/root/hero_bootstrap".into(),
            web_port: 9988,
        }
    }

    /// The socket exists and is a unix socket: checked without connecting, so the server can
    /// refuse a job at creation with the path that is missing.
    pub fn check_prerequisites(&self) -> Result<(), BackendError> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&self.socket_path) {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            Ok(_) => Err(BackendError::Config(format!(
                "hero_compute backend: {} exists but is not a unix socket",
                self.socket_path.display()
            ))),
            Err(e) => Err(BackendError::Config(format!(
                "hero_compute backend: no socket at {} ({e}); is hero_compute running?",
                self.socket_path.display()
            ))),
        }
    }
}

/// `$HERO_SOCKET_DIR/hero_compute/rpc.sock`, `HERO_SOCKET_DIR` defaulting to `~/hero/var/sockets`
/// (hero_router convention).
pub fn default_socket_path() -> PathBuf {
    let dir = std::env::var_os("HERO_SOCKET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join("hero/var/sockets")
        });
    dir.join("hero_compute").join("rpc.sock")
}

/// A JSON-RPC error answer.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
}

/// The hero_compute backend.
#[derive(Debug)]
pub struct HeroComputeBackend {
    cfg: HeroComputeConfig,
    next_id: AtomicU64,
    gateways: Mutex<HashMap<String, GatewayInfo>>,
}

impl HeroComputeBackend {
    /// Connect: call `rpc.discover` and check that every method of
    /// [`assumed::REQUIRED_METHODS`] is offered.
    pub async fn connect(cfg: HeroComputeConfig) -> Result<Self, BackendError> {
        let gateways = match &cfg.gateways_file {
            Some(path) => load_gateways(path)?,
            None => HashMap::new(),
        };
        let be = Self {
            cfg,
            next_id: AtomicU64::new(1),
            gateways: Mutex::new(gateways),
        };
        let doc =
            be.call("rpc.discover", json!([]))
                .await?
                .map_err(|e| BackendError::Protocol {
                    op: "rpc.discover".into(),
                    detail: format!("error {}: {}", e.code, e.message),
                })?;
        let offered: Vec<String> = doc
            .get("methods")
            .and_then(Value::as_array)
            .ok_or_else(|| BackendError::Protocol {
                op: "rpc.discover".into(),
                detail: "the document has no `methods` array".into(),
            })?
            .iter()
            .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        let missing: Vec<String> = assumed::REQUIRED_METHODS
            .iter()
            .filter(|m| !offered.iter().any(|o| o == *m))
            .map(|m| m.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(BackendError::MissingMethods {
                socket: be.cfg.socket_path.display().to_string(),
                missing,
            });
        }
        Ok(be)
    }

    /// The socket in use.
    pub fn socket_path(&self) -> &Path {
        &self.cfg.socket_path
    }

    /// One JSON-RPC call. Outer error: transport/protocol; inner: the JSON-RPC error answer.
    async fn call(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, RpcError>, BackendError> {
        let op = method.to_string();
        match tokio::time::timeout(self.cfg.timeout, self.call_inner(method, params)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                op,
                detail: format!(
                    "no answer within {:?} on {}",
                    self.cfg.timeout,
                    self.cfg.socket_path.display()
                ),
            }),
        }
    }

    async fn call_inner(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, RpcError>, BackendError> {
        let unavailable = |detail: String| BackendError::Unavailable {
            op: method.to_string(),
            detail,
        };
        let stream = tokio::net::UnixStream::connect(&self.cfg.socket_path)
            .await
            .map_err(|e| unavailable(format!("{}: {e}", self.cfg.socket_path.display())))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let req = http::Request::post("/rpc")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| unavailable(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status();
        let bytes = peer_body::collect_capped(resp.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if status.is_server_error() {
            return Err(unavailable(format!(
                "HTTP {status}: {}",
                peer_body::excerpt(&String::from_utf8_lossy(&bytes))
            )));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| BackendError::Protocol {
            op: method.to_string(),
            detail: format!("HTTP {status}, body is not JSON: {e}"),
        })?;
        // The answer must be to this request (JSON-RPC 2.0 §5: the same id; `null` only when the server could not
        // read the request's). An answer to another one is a confused peer, and its result is not ours to act on.
        match v.get("id") {
            Some(got) if got == &json!(id) => {}
            Some(Value::Null) if v.get("error").is_some_and(|e| !e.is_null()) => {}
            got => {
                return Err(BackendError::Protocol {
                    op: method.to_string(),
                    detail: format!(
                        "the answer is to request id {}, not {id}",
                        got.map(Value::to_string).unwrap_or_else(|| "(none)".into())
                    ),
                })
            }
        }
        // `"error": null` beside a result is no error (some servers send both members).
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Ok(Err(RpcError {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: peer_body::excerpt(
                    err.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
            }));
        }
        match v.get("result") {
            Some(r) => Ok(Ok(r.clone())),
            None => Err(BackendError::Protocol {
                op: method.to_string(),
                detail: format!("HTTP {status}, neither result nor error"),
            }),
        }
    }

    fn rpc_failure(method: &str, e: RpcError) -> BackendError {
        // JSON-RPC: -32000..-32099 are implementation-defined server errors → retry; the rest
        // (invalid params, method not found…) are the caller's fault.
        if (-32099..=-32000).contains(&e.code) && e.code != assumed::NOT_FOUND_CODE {
            BackendError::Unavailable {
                op: method.into(),
                detail: format!("error {}: {}", e.code, e.message),
            }
        } else {
            BackendError::Rejected {
                op: method.into(),
                detail: format!("error {}: {}", e.code, e.message),
            }
        }
    }

    fn vm_info(&self, name: &ResourceName, vm: &assumed::AssumedVm) -> VmInfo {
        let ip = vm.private_ip.clone().unwrap_or_default();
        VmInfo {
            name: name.clone(),
            backend: "hero_compute".into(),
            ssh: SshTarget {
                host: vm.mycelium_ip.clone().unwrap_or_default(),
                port: 22,
                user: self.cfg.ssh_user.clone(),
            },
            private_ip: vm.private_ip.clone(),
            mycelium_ip: vm.mycelium_ip.clone(),
            web_backend_url: format!("http://{ip}:{}", self.cfg.web_port),
            manifest_path: self.cfg.manifest_path.clone(),
            work_dir: self.cfg.work_dir.clone(),
            env_file: None,
            node_id: vm.node_id,
            backend_id: Some(vm.name.clone()),
            secret_store: crate::compute::VmSecretStore::HeroProc,
        }
    }
}

#[async_trait]
impl ComputeBackend for HeroComputeBackend {
    fn kind(&self) -> &'static str {
        "hero_compute"
    }

    fn check_prerequisites(&self) -> Result<(), BackendError> {
        self.cfg.check_prerequisites()
    }

    async fn deploy_vm(&self, req: &VmRequest, out: OutputSink) -> Result<VmInfo, BackendError> {
        if let Some(existing) = self.get_vm(&req.name).await? {
            out(&format!(
                "{}: hero_compute already has it: adopting",
                req.name
            ));
            return Ok(existing);
        }
        const M: &str = "ComputeService.deploy_vm";
        let r = self
            .call(M, assumed::deploy_vm_params(req))
            .await?
            .map_err(|e| Self::rpc_failure(M, e))?;
        out(&format!("{}: deploy_vm accepted by hero_compute", req.name));
        let vm = match assumed::parse_vm(&r) {
            Some(vm) => the_one_asked(M, &req.name, vm)?,
            None => assumed::AssumedVm {
                name: req.name.to_string(),
                node_id: req.node_id,
                mycelium_ip: None,
                private_ip: None,
            },
        };
        Ok(self.vm_info(&req.name, &vm))
    }

    async fn get_vm(&self, name: &ResourceName) -> Result<Option<VmInfo>, BackendError> {
        const M: &str = "ComputeService.get_vm";
        match self.call(M, assumed::name_params(name)).await? {
            Ok(Value::Null) => Ok(None),
            Ok(v) => match assumed::parse_vm(&v) {
                Some(vm) => Ok(Some(self.vm_info(name, &the_one_asked(M, name, vm)?))),
                None => Err(BackendError::Protocol {
                    op: M.into(),
                    detail: format!(
                        "result has no `name`: {}",
                        crate::peer_body::excerpt(&v.to_string())
                    ),
                }),
            },
            Err(e) if assumed::is_not_found(e.code, &e.message, "vm", &name.to_string()) => {
                Ok(None)
            }
            Err(e) => Err(Self::rpc_failure(M, e)),
        }
    }

    /// hero_compute owns a VM's parts itself and names only VMs and gateways: nothing else to ask about.
    async fn remains(&self, _name: &ResourceName) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }

    async fn delete_vm(&self, name: &ResourceName, out: OutputSink) -> Result<(), BackendError> {
        const M: &str = "ComputeService.delete_vm";
        match self.call(M, assumed::name_params(name)).await? {
            Ok(_) => {
                out(&format!("{name}: deleted by hero_compute"));
                Ok(())
            }
            Err(e) if assumed::is_not_found(e.code, &e.message, "vm", &name.to_string()) => Ok(()),
            Err(e) => Err(Self::rpc_failure(M, e)),
        }
    }

    async fn deploy_gateway(
        &self,
        req: &GatewayRequest,
        out: OutputSink,
    ) -> Result<GatewayInfo, BackendError> {
        if let Some(g) = self.get_gateway(&req.name).await? {
            if g.backend_url == req.backend_url {
                return Ok(g);
            }
        }
        const M: &str = "ComputeService.deploy_webgateway";
        let r = self
            .call(M, assumed::deploy_webgateway_params(req))
            .await?
            .map_err(|e| Self::rpc_failure(M, e))?;
        let fqdn = assumed::parse_gateway_fqdn(&r).ok_or_else(|| BackendError::Protocol {
            op: M.into(),
            detail: format!(
                "result has no `fqdn`: {}",
                crate::peer_body::excerpt(&r.to_string())
            ),
        })?;
        let info = GatewayInfo {
            name: req.name.clone(),
            url: format!("https://{fqdn}/"),
            fqdn,
            backend_url: req.backend_url.clone(),
            connect_addr: None,
        };
        out(&format!("{}: gateway {} deployed", req.name, info.fqdn));
        self.remember(|g| {
            g.insert(req.name.to_string(), info.clone());
        })?;
        Ok(info)
    }

    async fn get_gateway(&self, name: &ResourceName) -> Result<Option<GatewayInfo>, BackendError> {
        Ok(self
            .gateways
            .lock()
            .ok()
            .and_then(|g| g.get(&name.to_string()).cloned()))
    }

    async fn delete_gateway(
        &self,
        name: &ResourceName,
        out: OutputSink,
    ) -> Result<(), BackendError> {
        const M: &str = "ComputeService.delete_webgateway";
        let r = match self.call(M, assumed::name_params(name)).await? {
            Ok(_) => Ok(()),
            Err(e)
                if assumed::is_not_found(e.code, &e.message, "gateway", &name.to_string())
                    || assumed::is_not_found(
                        e.code,
                        &e.message,
                        "webgateway",
                        &name.to_string(),
                    ) =>
            {
                Ok(())
            }
            Err(e) => Err(Self::rpc_failure(M, e)),
        };
        if r.is_ok() {
            self.remember(|g| {
                g.remove(&name.to_string());
            })?;
            out(&format!("{name}: gateway deleted"));
        }
        r
    }

    async fn inventory(&self) -> Result<Vec<Resource>, BackendError> {
        const M: &str = "ComputeService.list_vms";
        let r = self
            .call(M, json!({}))
            .await?
            .map_err(|e| Self::rpc_failure(M, e))?;
        let vms = assumed::parse_vm_list(&r).ok_or_else(|| BackendError::Protocol {
            op: M.into(),
            detail: format!(
                "not a VM list: {}",
                crate::peer_body::excerpt(&r.to_string())
            ),
        })?;
        let mut out: Vec<Resource> = vms
            .into_iter()
            .map(|vm| Resource {
                kind: ResourceKind::Vm,
                name: ResourceName::parse(&vm.name),
                detail: format!(
                    "node {}, mycelium {}",
                    vm.node_id
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "?".into()),
                    vm.mycelium_ip.as_deref().unwrap_or("-")
                ),
                raw_name: vm.name,
            })
            .collect();
        if let Ok(g) = self.gateways.lock() {
            for (n, info) in g.iter() {
                out.push(Resource {
                    kind: ResourceKind::Gateway,
                    raw_name: n.clone(),
                    name: ResourceName::parse(n),
                    detail: info.fqdn.clone(),
                });
            }
        }
        Ok(out)
    }
}

/// The remembered gateways in `path`; none when it does not exist yet. A file that is there but unreadable is an
/// error naming it, never an empty map (that would forget every gateway, the fault the file exists to prevent).
fn load_gateways(path: &Path) -> Result<HashMap<String, GatewayInfo>, BackendError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BackendError::Config(format!(
            "{}: not this deployer's record of hero_compute gateways ({e}); move it aside only after checking \
             which gateways hero_compute serves",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(BackendError::io(path)(e)),
    }
}

impl HeroComputeBackend {
    /// Changes the remembered gateways and writes them to the file (whole or not at all) before answering.
    fn remember(
        &self,
        change: impl FnOnce(&mut HashMap<String, GatewayInfo>),
    ) -> Result<(), BackendError> {
        let mut g = self.gateways.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut g);
        let Some(path) = &self.cfg.gateways_file else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(BackendError::io(dir))?;
        }
        let text = serde_json::to_vec_pretty(&*g).map_err(|e| BackendError::Protocol {
            op: "remember gateways".into(),
            detail: e.to_string(),
        })?;
        crate::compute::replace_file(path, &text)
    }
}

/// `vm` if it is the one asked for. Why: a wrong or mixed-up answer adopted another user's VM (its manifest and
/// SSO secrets pushed to it, the gateway pointed at it).
fn the_one_asked(
    op: &str,
    name: &ResourceName,
    vm: assumed::AssumedVm,
) -> Result<assumed::AssumedVm, BackendError> {
    if vm.name == name.to_string() {
        Ok(vm)
    } else {
        Err(BackendError::Protocol {
            op: op.into(),
            detail: format!(
                "asked for VM {name}, hero_compute answered with VM {}",
                crate::peer_body::excerpt(&vm.name)
            ),
        })
    }
}
