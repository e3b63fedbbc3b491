//! Node selection behind a trait, so the provisioning core reaches gridproxy only through it
//! (the architecture's "the core reaches the world only via traits") and a test or the
//! benchmark can stand in for the grid. The selection rules stay in [`crate::node_selection`];
//! this file only says how the core asks.

use async_trait::async_trait;

use crate::gridproxy::GridProxyClient;
use crate::node_selection::{select_from_gridproxy_for, Requirements, SelectError, Selection};

/// Chooses the node a VM goes on among `candidates`, for a VM with the requirements `req`
/// (capacity, the deployer's twin for rented nodes, nodes excluded after a failed deploy,
/// features). One argument for all of them, so a new requirement cannot be forgotten by one
/// implementation.
#[async_trait]
pub trait NodeSelector: Send + Sync {
    async fn select(
        &self,
        candidates: &[u32],
        req: &Requirements,
    ) -> Result<Selection, SelectError>;
}

/// The real grid: one list query, then a fresh look at the chosen node
/// ([`select_from_gridproxy_for`]).
#[async_trait]
impl NodeSelector for GridProxyClient {
    async fn select(
        &self,
        candidates: &[u32],
        req: &Requirements,
    ) -> Result<Selection, SelectError> {
        select_from_gridproxy_for(self, candidates, req).await
    }
}
