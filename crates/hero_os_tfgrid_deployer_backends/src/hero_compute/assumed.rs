//! ASSUMED wire shapes of hero_compute's `ComputeService` — the only place they live.
//!
//! hero_compute's OpenRPC document (`crates/my_compute_zos_server/src/cloud/openrpc.json`) is NOT
//! published to us (shared/reference/tfgrid-apis.md §3.2): parameter names, units, result shapes
//! and error codes are unknown, as is whether `delete_vm` / `delete_webgateway` exist. What is
//! known (hero_compute#116, #69): methods `ComputeService.deploy_vm` (cpu 16, memory 8 GB, disk
//! 200 GB, rootfs 16 GB, flist `ubuntu-24.04-latest`, publicip false, pinned `node_id`),
//! `.get_vm` (poll until `mycelium_ip`), `.deploy_webgateway` (`<user>.<node>.grid.tf` →
//! `http://<vm_ip>:9988`), `.list_vms`.
//!
//! Assumptions made here, to be checked against the real `rpc.discover` document before use:
//! * params are passed **by name** (a JSON object);
//! * sizes are in **GB** (`memory_gb`, `rootfs_gb`, `disk_gb`), CPU as `cpu`;
//! * a VM is identified by `name` (our [`ResourceName`]), a gateway by `name` too, with its public
//!   label in `subdomain` and its target in `backend`;
//! * results are objects with `name`, `node_id`, `mycelium_ip`, `private_ip` (VM) and `fqdn`
//!   (gateway); `list_vms` returns an array of VM objects (or `{ "vms": [...] }`);
//! * "does not exist" is a JSON-RPC error whose message contains `not found` (any code), or code
//!   `-32004`.
//!
//! The client refuses to start when `rpc.discover` lacks any method of [`REQUIRED_METHODS`], so a
//! renamed or missing method is caught at start, not mid-job.

use serde_json::{json, Value};

use crate::compute::{GatewayRequest, ResourceName, VmRequest};

/// Methods the backend calls; all must appear in `rpc.discover`.
pub const REQUIRED_METHODS: [&str; 6] = [
    "ComputeService.deploy_vm",
    "ComputeService.get_vm",
    "ComputeService.deploy_webgateway",
    "ComputeService.delete_vm",
    "ComputeService.delete_webgateway",
    "ComputeService.list_vms",
];

/// The flist name hero_compute#116 uses.
pub const FLIST_NAME: &str = "ubuntu-24.04-latest";

/// Assumed "not found" JSON-RPC error code.
pub const NOT_FOUND_CODE: i64 = -32004;

/// Params of `ComputeService.deploy_vm`.
pub fn deploy_vm_params(req: &VmRequest) -> Value {
    json!({
        "name": req.name.to_string(),
        "node_id": req.node_id,
        "cpu": req.spec.cpu,
        "memory_gb": req.spec.memory_mb / 1024,
        "rootfs_gb": req.spec.rootfs_mb / 1024,
        "disk_gb": req.spec.disk_gb,
        "flist": FLIST_NAME,
        "public_ip": req.spec.public_ip,
        "ssh_keys": [req.ssh_public_key.trim()],
    })
}

/// Params of `get_vm` / `delete_vm` / `delete_webgateway`.
pub fn name_params(name: &ResourceName) -> Value {
    json!({ "name": name.to_string() })
}

/// Params of `ComputeService.deploy_webgateway`.
pub fn deploy_webgateway_params(req: &GatewayRequest) -> Value {
    json!({
        "name": req.name.to_string(),
        "subdomain": req.host_label,
        "node_id": req.node_id,
        "backend": req.backend_url,
    })
}

/// A VM as hero_compute is assumed to describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumedVm {
    /// `name`.
    pub name: String,
    /// `node_id`.
    pub node_id: Option<u32>,
    /// `mycelium_ip` (empty/absent while booting).
    pub mycelium_ip: Option<String>,
    /// `private_ip` (also accepted: `ip`).
    pub private_ip: Option<String>,
}

fn opt_str(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Parse a VM result; `None` if it has no `name`.
pub fn parse_vm(v: &Value) -> Option<AssumedVm> {
    Some(AssumedVm {
        name: opt_str(v, &["name"])?,
        node_id: v
            .get("node_id")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        mycelium_ip: opt_str(v, &["mycelium_ip"]),
        private_ip: opt_str(v, &["private_ip", "ip"]),
    })
}

/// Parse a `list_vms` result (array, or object with `vms`).
pub fn parse_vm_list(v: &Value) -> Option<Vec<AssumedVm>> {
    let arr = v
        .as_array()
        .or_else(|| v.get("vms").and_then(Value::as_array))?;
    Some(arr.iter().filter_map(parse_vm).collect())
}

/// The gateway's public host name from a `deploy_webgateway` result (`fqdn`, or `domain`).
pub fn parse_gateway_fqdn(v: &Value) -> Option<String> {
    opt_str(v, &["fqdn", "domain"])
}

/// Is this JSON-RPC error "the `kind` (`vm`, `gateway`) named `name` does not exist"? The assumed code, or a
/// message that says "not found" of that resource: it names it, or starts with the kind ("VM not found"). Why not
/// any "not found": "node 8 not found" or "contract not found" is about something else, and taking it for "gone"
/// made a delete report done while the VM still ran (and was billed), or a lookup deploy a second one.
pub fn is_not_found(code: i64, message: &str, kind: &str, name: &str) -> bool {
    if code == NOT_FOUND_CODE {
        return true;
    }
    let m = message.to_ascii_lowercase();
    m.contains("not found")
        && (m.contains(&name.to_ascii_lowercase()) || m.trim_start().starts_with(kind))
}
