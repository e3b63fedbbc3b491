//! Pure node selection: given gridproxy data for the configured candidate nodes and the capacity a
//! VM needs, pick one and say why, or say why every candidate was rejected.
//!
//! Kept free of I/O so it is trivially testable and the orchestrator can record the `reason` and
//! the `rejected` list in the job's events. [`select_from_gridproxy`] is the thin I/O wrapper.

use std::fmt;

use crate::gridproxy::{GridProxyClient, GridProxyError, Node};
use crate::spec::{Capacity, GIB};

/// The freefarm gateway nodes the demo uses by default.
pub const DEFAULT_CANDIDATE_NODES: [u32; 4] = [1, 8, 13, 50];

/// The SRU the grid keeps for the node itself (`setup.sql`).
pub const SRU_RESERVE: u64 = 20 * GIB;
/// The minimum MRU the grid keeps for the node itself (`setup.sql`): max(total/10, 2 GiB).
pub const MRU_RESERVE_MIN: u64 = 2 * GIB;

/// Free capacity of a node after the grid's reserves, as gridproxy computes it server-side:
/// MRU `total − used − max(total/10, 2 GiB)`, SRU `total − used − 20 GiB`, HRU `total − used`.
/// Never negative (saturates at 0).
pub fn free_capacity(node: &Node) -> Capacity {
    let t = node.total;
    let u = node.used;
    let mru_reserve = (t.mru / 10).max(MRU_RESERVE_MIN);
    Capacity {
        mru: t.mru.saturating_sub(u.mru).saturating_sub(mru_reserve),
        sru: t.sru.saturating_sub(u.sru).saturating_sub(SRU_RESERVE),
        hru: t.hru.saturating_sub(u.hru),
    }
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

/// Why a node cannot take the VM, or `None` if it can.
pub fn rejection_reason(node: &Node, need: &Capacity) -> Option<String> {
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
    let free = free_capacity(node);
    let mut short = Vec::new();
    for (label, f, n) in [
        ("memory (MRU)", free.mru, need.mru),
        ("SSD (SRU)", free.sru, need.sru),
        ("HDD (HRU)", free.hru, need.hru),
    ] {
        if f < n {
            short.push(format!("{label} free {} < needed {}", gib(f), gib(n)));
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
        if let Some(why) = rejection_reason(node, need) {
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
    let nodes = client.nodes_by_ids(candidates).await?;
    let first = select_node(candidates, &nodes, need)?;
    let fresh = client.node(first.node.node_id).await?;
    if fresh == first.node {
        return Ok(first);
    }
    let mut nodes = nodes;
    if let Some(slot) = nodes.iter_mut().find(|n| n.node_id == fresh.node_id) {
        *slot = fresh;
    }
    Ok(select_node(candidates, &nodes, need)?)
}
