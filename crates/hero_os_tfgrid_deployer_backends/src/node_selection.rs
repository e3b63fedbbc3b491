//! Pure node selection: given gridproxy data for the configured candidate nodes and the capacity a
//! VM needs, pick one and say why, or say why every candidate was rejected.
//!
//! Kept free of I/O so it is trivially testable and the orchestrator can record the `reason` and
//! the `rejected` list in the job's events. [`select_from_gridproxy_for`] is the thin I/O wrapper.
//!
//! What a node must offer ([`Requirements`]): up, healthy, a gateway domain, available to the
//! deployer's twin (not rented by another twin, not in a dedicated farm or carrying an extra fee
//! unless rented by us — gridproxy's own `available_for` rule), the node features the VM and its
//! gateway use, not excluded by an earlier failed deploy of the same job, and the capacity.

use std::fmt;

use crate::gridproxy::{GridProxyClient, GridProxyError, Node};
use crate::spec::{Capacity, GIB};

/// The freefarm gateway nodes the demo uses by default.
pub const DEFAULT_CANDIDATE_NODES: [u32; 4] = [1, 8, 13, 50];

/// Free capacity of a node exactly as gridproxy computes its `free_*` columns
/// (`grid-proxy/internal/explorer/db/setup.sql`, `resources_cache`): `total − used`. The server's
/// `used_mru` already holds Σcontracts + max(total/10, 2 GiB) and `used_sru` Σcontracts + 20 GiB,
/// so subtracting a reserve here again would under-count every node. Saturates at 0 (the server's
/// column may go negative on an over-committed node).
pub fn free_capacity(node: &Node) -> Capacity {
    let t = node.total;
    let u = node.used;
    Capacity {
        mru: t.mru.saturating_sub(u.mru),
        sru: t.sru.saturating_sub(u.sru),
        hru: t.hru.saturating_sub(u.hru),
    }
}

/// Node features (zos `gridtypes` names, gridproxy `features`) a demo VM with a name gateway on
/// the same node uses: one VM kind, one network kind, the data disk, mycelium, the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureNeeds {
    /// Accept zos-light nodes (`zmachine-light` / `network-light`). Only providers from
    /// `5812981` (2024-10-16) on deploy to them; the pinned 1.11.2 line is older, so off by default.
    pub light_ok: bool,
}

impl FeatureNeeds {
    /// What is missing from `features`, in words; empty when the node offers everything.
    pub fn missing(&self, features: &[String]) -> Vec<String> {
        let has = |f: &str| features.iter().any(|x| x == f);
        let mut missing = Vec::new();
        let alt = |full: &str, light: &str| -> Option<String> {
            if has(full) || (self.light_ok && has(light)) {
                None
            } else if has(light) {
                Some(format!("{full} (only {light}: a zos-light node, which the pinned provider cannot deploy to)"))
            } else {
                Some(full.to_string())
            }
        };
        missing.extend(alt("zmachine", "zmachine-light"));
        missing.extend(alt("network", "network-light"));
        for f in ["zmount", "mycelium", "gateway-name-proxy"] {
            if !has(f) {
                missing.push(f.to_string());
            }
        }
        missing
    }
}

/// Everything a node must satisfy to take the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// Capacity the VM consumes (bytes).
    pub need: Capacity,
    /// The deployer's twin: a node rented by it is available to it (gridproxy `available_for`).
    /// `None` = only nodes nobody rents.
    pub twin_id: Option<u64>,
    /// Nodes a deploy of this job already failed on: never retried blindly on the same node.
    pub excluded: Vec<u32>,
    /// Node features needed.
    pub features: FeatureNeeds,
}

impl Requirements {
    /// Requirements for `need` with the defaults: no twin (only unrented nodes), nothing
    /// excluded, zos-light nodes refused.
    pub fn new(need: Capacity) -> Self {
        Self {
            need,
            twin_id: None,
            excluded: Vec::new(),
            features: FeatureNeeds { light_ok: false },
        }
    }
}

/// Whether a failed `deploy_vm` on a node should exclude that node when the job selects again:
/// yes when the node or the grid answered badly (tool failures, timeouts, unavailability,
/// rejections, odd answers), no when the cause is ours and would follow the VM anywhere
/// (misconfiguration, names, local I/O) or is not about the node (a taken gateway name).
pub fn exclude_node_after(err: &crate::compute::BackendError) -> bool {
    use crate::compute::BackendError as E;
    match err {
        E::ToolFailed { .. }
        | E::Timeout { .. }
        | E::Unavailable { .. }
        | E::Rejected { .. }
        | E::Protocol { .. } => true,
        E::InvalidName(_)
        | E::Config(_)
        | E::NameTaken { .. }
        | E::MissingMethods { .. }
        | E::Io { .. }
        | E::Injected(_) => false,
    }
}

/// gridproxy's `available_for=<twin>` rule (`postgres.go`): rented by that twin, or not rented,
/// not in a dedicated farm and without an extra fee. `dedicated` is honoured as well, should a
/// server set it on nodes. `None` when available, else why not.
pub fn availability_problem(node: &Node, twin_id: Option<u64>) -> Option<String> {
    if node.rented || node.rented_by_twin_id != 0 {
        if twin_id.is_some_and(|t| t == node.rented_by_twin_id) {
            return None;
        }
        return Some(format!(
            "rented by twin {} (not the deployer's{})",
            node.rented_by_twin_id,
            twin_id.map(|t| format!(" twin {t}")).unwrap_or_default()
        ));
    }
    if node.in_dedicated_farm {
        return Some("in a dedicated farm: it must be rented first".into());
    }
    if node.dedicated || node.extra_fee > 0 {
        return Some("a dedicated node (extra fee): it must be rented first".into());
    }
    None
}

/// Headroom of a node for a VM: the smallest, over the resources the VM needs (MRU, SRU, and HRU
/// only if it needs any), of `(free − need) / total` — the fraction of the node that stays free
/// after placing the VM on its tightest resource. Higher is better. `None` if it does not fit.
pub fn headroom(node: &Node, need: &Capacity) -> Option<f64> {
    let free = free_capacity(node);
    let mut worst: Option<f64> = None;
    for (free_r, need_r, total_r) in [
        (free.mru, need.mru, node.total.mru),
        (free.sru, need.sru, node.total.sru),
        (free.hru, need.hru, node.total.hru),
    ] {
        if need_r == 0 {
            continue;
        }
        if free_r < need_r || total_r == 0 {
            return None;
        }
        let ratio = (free_r - need_r) as f64 / total_r as f64;
        worst = Some(worst.map_or(ratio, |w: f64| w.min(ratio)));
    }
    Some(worst.unwrap_or(1.0))
}

/// The chosen node and the record of why.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The chosen node (gridproxy data as seen).
    pub node: Node,
    /// Its gateway domain (`publicConfig.domain`): the user's URL is `<name>.<domain>`.
    pub domain: String,
    /// Headroom of the chosen node (see [`headroom`]).
    pub headroom: f64,
    /// Human sentence for the job's events.
    pub reason: String,
    /// Every other candidate with the reason it lost or was rejected.
    pub rejected: Vec<(u32, String)>,
}

/// No candidate can take the VM. Display lists every node and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoCandidate {
    /// `(node id, reason)` for every configured candidate.
    pub rejected: Vec<(u32, String)>,
}

impl fmt::Display for NoCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rejected.is_empty() {
            return f.write_str("no node can take the VM: no candidate nodes are configured");
        }
        f.write_str("no node can take the VM: ")?;
        for (i, (id, why)) in self.rejected.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "node {id}: {why}")?;
        }
        Ok(())
    }
}

/// Format bytes as GiB with one decimal, for reasons humans read.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

/// Why a node cannot take the VM, or `None` if it can (capacity and state only; see
/// [`rejection_reason_for`] for every requirement).
pub fn rejection_reason(node: &Node, need: &Capacity) -> Option<String> {
    rejection_reason_for(node, &Requirements::new(*need))
}

/// Why a node fails `req`, or `None` if it satisfies every requirement.
pub fn rejection_reason_for(node: &Node, req: &Requirements) -> Option<String> {
    let need = &req.need;
    if req.excluded.contains(&node.node_id) {
        return Some("excluded: a deploy on it failed earlier in this job".into());
    }
    if node.status != "up" {
        return Some(format!("status is {:?}, not \"up\"", node.status));
    }
    match node.healthy {
        Some(true) => {}
        Some(false) => return Some("not healthy (no RMB answer within 5 min)".to_string()),
        None => return Some("gridproxy did not report health".to_string()),
    }
    if node.public_config.domain.trim().is_empty() {
        return Some("no gateway domain (publicConfig.domain is empty)".to_string());
    }
    if let Some(why) = availability_problem(node, req.twin_id) {
        return Some(why);
    }
    match &node.features {
        None => return Some("gridproxy did not report the node's features".into()),
        Some(f) => {
            let missing = req.features.missing(f);
            if !missing.is_empty() {
                return Some(format!("lacks node feature(s): {}", missing.join(", ")));
            }
        }
    }
    let free = free_capacity(node);
    let mut short = Vec::new();
    for (label, f, n) in [
        ("memory (MRU)", free.mru, need.mru),
        ("SSD (SRU)", free.sru, need.sru),
        ("HDD (HRU)", free.hru, need.hru),
    ] {
        if f < n {
            let (gf, gn) = (gib(f), gib(n));
            // When rounding hides the difference, say it in bytes.
            let bytes = if gf == gn {
                format!(" ({f} < {n} bytes)")
            } else {
                String::new()
            };
            short.push(format!("{label} free {gf} < needed {gn}{bytes}"));
        }
    }
    if !short.is_empty() {
        return Some(format!("not enough capacity: {}", short.join(", ")));
    }
    None
}

/// Choose a node among `candidates` (in the configured order) using the gridproxy data `nodes`.
///
/// Keeps nodes that are `up`, healthy, have a gateway domain and fit `need` after the reserves;
/// picks the highest [`headroom`], ties broken by the lowest node id. Candidates absent from
/// `nodes` are rejected as "not known to gridproxy"; nodes not in `candidates` are ignored.
pub fn select_node(
    candidates: &[u32],
    nodes: &[Node],
    need: &Capacity,
) -> Result<Selection, NoCandidate> {
    select_node_for(candidates, nodes, &Requirements::new(*need))
}

/// [`select_node`] with every requirement of `req` (twin, exclusions, features).
pub fn select_node_for(
    candidates: &[u32],
    nodes: &[Node],
    req: &Requirements,
) -> Result<Selection, NoCandidate> {
    let need = &req.need;
    let mut rejected: Vec<(u32, String)> = Vec::new();
    let mut fitting: Vec<(&Node, f64)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for &id in candidates {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = nodes.iter().find(|n| n.node_id == id) else {
            rejected.push((
                id,
                "not known to gridproxy (absent from the answer)".to_string(),
            ));
            continue;
        };
        if let Some(why) = rejection_reason_for(node, req) {
            rejected.push((id, why));
            continue;
        }
        match headroom(node, need) {
            Some(h) => fitting.push((node, h)),
            None => rejected.push((id, "does not fit".to_string())),
        }
    }
    fitting.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.node_id.cmp(&b.0.node_id)));
    let mut iter = fitting.into_iter();
    let Some((best, best_h)) = iter.next() else {
        return Err(NoCandidate { rejected });
    };
    for (other, h) in iter {
        rejected.push((
            other.node_id,
            format!(
                "fits but has less headroom ({:.1}% vs {:.1}%)",
                h * 100.0,
                best_h * 100.0
            ),
        ));
    }
    let free = free_capacity(best);
    let reason = format!(
        "node {} ({}) chosen: up, healthy, headroom {:.1}% after placement; free before placement: \
         memory {}, SSD {}; needed: memory {}, SSD {}; {} other candidate(s) rejected or ranked lower",
        best.node_id,
        best.public_config.domain,
        best_h * 100.0,
        gib(free.mru),
        gib(free.sru),
        gib(need.mru),
        gib(need.sru),
        rejected.len()
    );
    Ok(Selection {
        node: best.clone(),
        domain: best.public_config.domain.clone(),
        headroom: best_h,
        reason,
        rejected,
    })
}

/// Errors of [`select_from_gridproxy`].
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// gridproxy could not be asked.
    #[error(transparent)]
    GridProxy(#[from] GridProxyError),
    /// Every candidate was rejected.
    #[error(transparent)]
    NoCandidate(#[from] NoCandidate),
}

impl SelectError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            SelectError::GridProxy(e) => e.code(),
            SelectError::NoCandidate(_) => "select.no_candidate",
        }
    }

    /// Retry with backoff? gridproxy hiccups yes; "no candidate" no (capacity does not come back
    /// within a job's backoff window; the operator must change the candidates).
    pub fn is_transient(&self) -> bool {
        match self {
            SelectError::GridProxy(e) => e.is_transient(),
            SelectError::NoCandidate(_) => false,
        }
    }
}

/// Fetch the candidates with one `GET nodes?node_ids=…` and run [`select_node`], then re-check the
/// chosen node with `GET nodes/{id}` (the list can be minutes old) and select again on the fresh
/// data if it changed.
pub async fn select_from_gridproxy(
    client: &GridProxyClient,
    candidates: &[u32],
    need: &Capacity,
) -> Result<Selection, SelectError> {
    select_from_gridproxy_for(client, candidates, &Requirements::new(*need)).await
}

/// [`select_from_gridproxy`] with every requirement of `req`.
pub async fn select_from_gridproxy_for(
    client: &GridProxyClient,
    candidates: &[u32],
    req: &Requirements,
) -> Result<Selection, SelectError> {
    let nodes = client.nodes_by_ids(candidates).await?;
    let first = select_node_for(candidates, &nodes, req)?;
    let fresh = client.node(first.node.node_id).await?;
    if fresh == first.node {
        return Ok(first);
    }
    let mut nodes = nodes;
    if let Some(slot) = nodes.iter_mut().find(|n| n.node_id == fresh.node_id) {
        *slot = fresh;
    }
    Ok(select_node_for(candidates, &nodes, req)?)
}
