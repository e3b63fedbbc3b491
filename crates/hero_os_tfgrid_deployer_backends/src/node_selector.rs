//! Node selection behind a trait, so the provisioning core reaches gridproxy only through it
//! (the architecture's "the core reaches the world only via traits") and a test or the
//! benchmark can stand in for the grid. The selection rules stay in [`crate::node_selection`];
//! this file only says how the core asks.

use async_trait::async_trait;

use crate::gridproxy::GridProxyClient;
use crate::node_selection::{select_from_gridproxy, SelectError, Selection};
use crate::spec::Capacity;

/// Chooses the node a VM goes on among `candidates`, for a VM that needs `need`.
#[async_trait]
pub trait NodeSelector: Send + Sync {
    async fn select(&self, candidates: &[u32], need: &Capacity) -> Result<Selection, SelectError>;
}

/// The real grid: one list query, then a fresh look at the chosen node
/// ([`select_from_gridproxy`]).
#[async_trait]
impl NodeSelector for GridProxyClient {
    async fn select(&self, candidates: &[u32], need: &Capacity) -> Result<Selection, SelectError> {
        select_from_gridproxy(self, candidates, need).await
    }
}
