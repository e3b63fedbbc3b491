//! A small gridproxy REST client (tfgrid-sdk-go `grid-proxy/`), one per network.
//!
//! Only what node selection needs: `GET nodes/{id}` and `GET nodes?node_ids=…`. The real server
//! answers 400 to unknown query parameters, so the parameter names used here are exactly the ones
//! of `NodeFilter` (`node_ids`, `size`) and nothing else.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::peer_body::{self, PeerBodyError};
use crate::spec::Capacity;

/// The longest gridproxy answer accepted: a page of candidate nodes is tens of kilobytes; this is a broken or
/// hostile mirror ([`peer_body`]).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// A ThreeFold Grid network. Each has its own gridproxy, chain and relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Mainnet.
    Main,
    /// Testnet.
    Test,
    /// QA net.
    Qa,
    /// Devnet (the provider's fallback when `network` is unset, which is why we always set it).
    Dev,
}

impl Network {
    /// The gridproxy base URL of this network, with a trailing slash.
    pub fn gridproxy_base_url(self) -> &'static str {
        match self {
            Network::Main => "https://gridproxy.grid.tf/",
            Network::Test => "https://gridproxy.test.grid.tf/",
            Network::Qa => "https://gridproxy.qa.grid.tf/",
            Network::Dev => "https://gridproxy.dev.grid.tf/",
        }
    }

    /// The name the provider and the grid use (`main`, `test`, `qa`, `dev`).
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Main => "main",
            Network::Test => "test",
            Network::Qa => "qa",
            Network::Dev => "dev",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = GridProxyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "main" => Ok(Network::Main),
            "test" => Ok(Network::Test),
            "qa" => Ok(Network::Qa),
            "dev" => Ok(Network::Dev),
            other => Err(GridProxyError::UnknownNetwork(other.to_string())),
        }
    }
}

/// Raw capacity as gridproxy reports it: bytes, except `cru` (count of vCPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// vCPUs (overcommitted: used may exceed total).
    #[serde(default)]
    pub cru: u64,
    /// SSD bytes.
    #[serde(default)]
    pub sru: u64,
    /// HDD bytes.
    #[serde(default)]
    pub hru: u64,
    /// Memory bytes.
    #[serde(default)]
    pub mru: u64,
}

impl Resources {
    /// The byte resources (drops `cru`).
    pub fn bytes(&self) -> Capacity {
        Capacity {
            mru: self.mru,
            sru: self.sru,
            hru: self.hru,
        }
    }
}

/// `publicConfig` of a node; `domain` non-empty means the node is a name gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PublicConfig {
    /// Gateway domain, e.g. `gent01.grid.tf`.
    #[serde(default)]
    pub domain: String,
    /// IPv4 gateway.
    #[serde(default)]
    pub gw4: String,
    /// IPv6 gateway.
    #[serde(default)]
    pub gw6: String,
    /// Public IPv4 (CIDR).
    #[serde(default)]
    pub ipv4: String,
    /// Public IPv6 (CIDR).
    #[serde(default)]
    pub ipv6: String,
}

/// The fields of a gridproxy node that node selection uses, normalised from both the flat
/// `nodes` item and the nested `nodes/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `nodeId`.
    pub node_id: u32,
    /// `farmId`.
    pub farm_id: u32,
    /// `twinId`.
    pub twin_id: u32,
    /// `up`, `down` or `standby`.
    pub status: String,
    /// Answered an RMB call within 5 minutes. `None` when the server did not send the field
    /// (old gridproxy versions): treated as not healthy, since we cannot tell.
    pub healthy: Option<bool>,
    /// Total capacity.
    pub total: Resources,
    /// Used capacity as gridproxy reports it: contracts **plus the node's reserve** for MRU and
    /// SRU (`setup.sql`), so free capacity is simply `total − used`.
    pub used: Resources,
    /// Public network config, if any.
    pub public_config: PublicConfig,
    /// Advertised features (`zmachine`, `mycelium`, …); `None` when gridproxy sent none (an old
    /// server, or `null` for a node that never reported them): node selection cannot tell.
    pub features: Option<Vec<String>>,
    /// `rented`: a twin holds a rent contract on the node.
    pub rented: bool,
    /// `rentedByTwinId`: that twin (0 when not rented).
    pub rented_by_twin_id: u64,
    /// `dedicated`.
    pub dedicated: bool,
    /// `inDedicatedFarm`: its farm rents whole nodes only.
    pub in_dedicated_farm: bool,
    /// `extraFee`: a farmer's fee for a dedicated node (non-zero = must be rented).
    pub extra_fee: u64,
    /// Unix seconds of the last report.
    pub updated_at: i64,
}

/// `GET nodes` item (capacity flat).
#[derive(Deserialize)]
struct RawNode {
    #[serde(rename = "nodeId")]
    node_id: u32,
    #[serde(rename = "farmId", default)]
    farm_id: u32,
    #[serde(rename = "twinId", default)]
    twin_id: u32,
    #[serde(default)]
    status: String,
    #[serde(default)]
    healthy: Option<bool>,
    #[serde(default)]
    total_resources: Resources,
    #[serde(default)]
    used_resources: Resources,
    #[serde(rename = "publicConfig", default)]
    public_config: Option<PublicConfig>,
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    rented: bool,
    #[serde(rename = "rentedByTwinId", default)]
    rented_by_twin_id: u64,
    #[serde(default)]
    dedicated: bool,
    #[serde(rename = "inDedicatedFarm", default)]
    in_dedicated_farm: bool,
    #[serde(rename = "extraFee", default)]
    extra_fee: u64,
    #[serde(rename = "updatedAt", default)]
    updated_at: i64,
}

#[derive(Deserialize, Default)]
struct RawCapacity {
    #[serde(default)]
    total_resources: Resources,
    #[serde(default)]
    used_resources: Resources,
}

/// `GET nodes/{id}` answer (`types.NodeWithNestedCapacity`).
#[derive(Deserialize)]
struct RawNestedNode {
    #[serde(rename = "nodeId")]
    node_id: u32,
    #[serde(rename = "farmId", default)]
    farm_id: u32,
    #[serde(rename = "twinId", default)]
    twin_id: u32,
    #[serde(default)]
    status: String,
    #[serde(default)]
    healthy: Option<bool>,
    #[serde(default)]
    capacity: RawCapacity,
    #[serde(rename = "publicConfig", default)]
    public_config: Option<PublicConfig>,
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    rented: bool,
    #[serde(rename = "rentedByTwinId", default)]
    rented_by_twin_id: u64,
    #[serde(default)]
    dedicated: bool,
    #[serde(rename = "inDedicatedFarm", default)]
    in_dedicated_farm: bool,
    #[serde(rename = "extraFee", default)]
    extra_fee: u64,
    #[serde(rename = "updatedAt", default)]
    updated_at: i64,
}

impl From<RawNode> for Node {
    fn from(r: RawNode) -> Self {
        Node {
            node_id: r.node_id,
            farm_id: r.farm_id,
            twin_id: r.twin_id,
            status: r.status,
            healthy: r.healthy,
            total: r.total_resources,
            used: r.used_resources,
            public_config: r.public_config.unwrap_or_default(),
            features: r.features,
            rented: r.rented,
            rented_by_twin_id: r.rented_by_twin_id,
            dedicated: r.dedicated,
            in_dedicated_farm: r.in_dedicated_farm,
            extra_fee: r.extra_fee,
            updated_at: r.updated_at,
        }
    }
}

impl From<RawNestedNode> for Node {
    fn from(r: RawNestedNode) -> Self {
        Node {
            node_id: r.node_id,
            farm_id: r.farm_id,
            twin_id: r.twin_id,
            status: r.status,
            healthy: r.healthy,
            total: r.capacity.total_resources,
            used: r.capacity.used_resources,
            public_config: r.public_config.unwrap_or_default(),
            features: r.features,
            rented: r.rented,
            rented_by_twin_id: r.rented_by_twin_id,
            dedicated: r.dedicated,
            in_dedicated_farm: r.in_dedicated_farm,
            extra_fee: r.extra_fee,
            updated_at: r.updated_at,
        }
    }
}

/// Parse a `GET nodes` answer (a JSON array of flat node items). A node this client cannot read (a field out of
/// range or of another type) is left out, with a warning naming it, and counts as not known: one odd node used to
/// fail the whole list, and with it every deploy whose candidates it was among.
pub fn parse_nodes(body: &str) -> Result<Vec<Node>, GridProxyError> {
    let items: Vec<serde_json::Value> =
        serde_json::from_str(body).map_err(|e| GridProxyError::Decode(e.to_string()))?;
    Ok(items
        .into_iter()
        .filter_map(|item| {
            let id = item.get("nodeId").cloned();
            match serde_json::from_value::<RawNode>(item) {
                Ok(raw) => Some(Node::from(raw)),
                Err(e) => {
                    tracing::warn!(node = ?id, error = %e, "gridproxy node left out: unreadable");
                    None
                }
            }
        })
        .collect())
}

/// Parse a `GET nodes/{id}` answer (capacity nested under `capacity`).
pub fn parse_node(body: &str) -> Result<Node, GridProxyError> {
    let raw: RawNestedNode =
        serde_json::from_str(body).map_err(|e| GridProxyError::Decode(e.to_string()))?;
    Ok(raw.into())
}

/// Errors of the gridproxy client.
#[derive(Debug, thiserror::Error)]
pub enum GridProxyError {
    /// Not one of `main`, `test`, `qa`, `dev`.
    #[error("unknown grid network {0:?} (expected main, test, qa or dev)")]
    UnknownNetwork(String),
    /// Connection refused, DNS, timeout…
    #[error("gridproxy unreachable: {0}")]
    Transport(String),
    /// `nodes/{id}` answered 404.
    #[error("gridproxy: node {0} not found")]
    NodeNotFound(u32),
    /// Any other non-2xx answer.
    #[error("gridproxy answered HTTP {status} for {url}: {body}")]
    Http {
        /// Status code.
        status: u16,
        /// Request URL.
        url: String,
        /// First bytes of the body.
        body: String,
    },
    /// The body was not the JSON we expect.
    #[error("gridproxy answer could not be decoded: {0}")]
    Decode(String),
}

impl GridProxyError {
    /// Stable error code for events and RPC errors.
    pub fn code(&self) -> &'static str {
        match self {
            GridProxyError::UnknownNetwork(_) => "gridproxy.unknown_network",
            GridProxyError::Transport(_) => "gridproxy.transport",
            GridProxyError::NodeNotFound(_) => "gridproxy.node_not_found",
            GridProxyError::Http { .. } => "gridproxy.http",
            GridProxyError::Decode(_) => "gridproxy.decode",
        }
    }

    /// Worth retrying with backoff: transport errors, 5xx and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            GridProxyError::Transport(_) => true,
            GridProxyError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A gridproxy client bound to one base URL.
#[derive(Debug, Clone)]
pub struct GridProxyClient {
    base_url: String,
    http: reqwest::Client,
}

impl GridProxyClient {
    /// Client for a network's public gridproxy, with a 30 s request timeout.
    pub fn new(network: Network) -> Result<Self, GridProxyError> {
        Self::with_base_url(network.gridproxy_base_url())
    }

    /// Client for any base URL (a mirror such as `gridproxy.02.grid.tf`, or a test server).
    /// A missing trailing slash is added.
    pub fn with_base_url(base_url: impl Into<String>) -> Result<Self, GridProxyError> {
        let mut base_url = base_url.into();
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| GridProxyError::Transport(e.to_string()))?;
        Ok(Self { base_url, http })
    }

    /// The base URL in use (with trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn get(&self, url: String) -> Result<(u16, String), GridProxyError> {
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| GridProxyError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) && status != 404 {
            return Err(GridProxyError::Http {
                status,
                url,
                body: peer_body::error_excerpt(resp).await,
            });
        }
        let body = peer_body::read_capped(resp, MAX_BODY)
            .await
            .map_err(|e| match e {
                PeerBodyError::TooLong { .. } => GridProxyError::Decode(e.to_string()),
                PeerBodyError::Read(why) => GridProxyError::Transport(why),
            })?;
        let body = String::from_utf8_lossy(&body).into_owned();
        Ok((status, body))
    }

    /// `GET nodes/{id}`: one node, fresh. Use it to re-check the chosen node just before deploying.
    pub async fn node(&self, node_id: u32) -> Result<Node, GridProxyError> {
        let url = format!("{}nodes/{node_id}", self.base_url);
        let (status, body) = self.get(url).await?;
        if status == 404 {
            return Err(GridProxyError::NodeNotFound(node_id));
        }
        let node = parse_node(&body)?;
        // The fresh answer is what selection re-checks a node against: one about another node would skip that.
        if node.node_id != node_id {
            return Err(GridProxyError::Decode(format!(
                "asked for node {node_id}, the answer is about node {}",
                node.node_id
            )));
        }
        Ok(node)
    }

    /// `GET nodes?node_ids=a,b,c&size=n`: the listed nodes, whatever their state (selection
    /// filters on the client so it can say why each one was rejected). Nodes the server does not
    /// know are simply absent from the answer.
    pub async fn nodes_by_ids(&self, node_ids: &[u32]) -> Result<Vec<Node>, GridProxyError> {
        if node_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = node_ids.iter().map(u32::to_string).collect();
        let url = format!(
            "{}nodes?node_ids={}&size={}",
            self.base_url,
            ids.join(","),
            node_ids.len().max(1)
        );
        let (status, body) = self.get(url.clone()).await?;
        if status == 404 {
            return Err(GridProxyError::Http {
                status,
                url,
                body: peer_body::excerpt(&body),
            });
        }
        parse_nodes(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_round_trip_and_have_base_urls() {
        for n in [Network::Main, Network::Test, Network::Qa, Network::Dev] {
            assert_eq!(n.as_str().parse::<Network>().ok(), Some(n));
            assert!(n.gridproxy_base_url().starts_with("https://gridproxy."));
            assert!(n.gridproxy_base_url().ends_with('/'));
        }
        assert_eq!(
            Network::Main.gridproxy_base_url(),
            "https://gridproxy.grid.tf/"
        );
        assert!("mainnet".parse::<Network>().is_err());
    }

    #[test]
    fn parses_nested_capacity_of_single_node() {
        let body = r#"{"nodeId":8,"farmId":1,"twinId":20,"status":"up","healthy":true,
            "capacity":{"total_resources":{"cru":8,"sru":1000,"hru":5,"mru":64},
                        "used_resources":{"cru":2,"sru":10,"hru":0,"mru":4}},
            "publicConfig":{"domain":"gent02.grid.tf","gw4":"","gw6":"","ipv4":"","ipv6":""}}"#;
        let n = parse_node(body).unwrap();
        assert_eq!(n.node_id, 8);
        assert_eq!(n.total.sru, 1000);
        assert_eq!(n.used.mru, 4);
        assert_eq!(n.public_config.domain, "gent02.grid.tf");
        assert_eq!(n.healthy, Some(true));
    }
}
