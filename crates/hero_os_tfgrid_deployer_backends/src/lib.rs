//! Leaf layer of the provisioning pipeline: the VM spec, gridproxy node selection, per-user SSH keys,
//! an SSH client, and the compute backends (local sandbox, OpenTofu, hero_compute) behind one trait.
//!
//! Every operation is written to be driven by a step-based, idempotent, resumable job runner:
//! deploys look for what an earlier attempt made and adopt it, deletes accept "already gone", and
//! every error type has a stable `code()` and an `is_transient()` that tells the runner whether a
//! retry with backoff makes sense. Time and randomness are parameters where behaviour depends on
//! them. Secrets (private keys, the mnemonic) are never logged nor put on a command line.

pub mod compute;
pub mod graceful_child;
pub mod grid_names;
pub mod gridproxy;
pub mod hero_compute;
pub mod lines;
pub mod local;
pub mod local_gateway;
mod local_sshd_watch;
pub mod manifest;
pub mod node_selection;
pub mod node_selector;
pub mod opentofu;
pub mod peer_body;
pub mod provider_pin;
pub mod provider_schema;
pub mod run_lock;
pub mod spec;

pub use gridproxy::{GridProxyClient, GridProxyError, Network, Node};
pub use node_selection::{
    select_node, select_node_for, FeatureNeeds, NoCandidate, Requirements, Selection,
    DEFAULT_CANDIDATE_NODES,
};
pub use node_selector::NodeSelector;
pub use spec::{Capacity, VmSpec};
pub mod process;
pub mod ssh;
pub mod sshd;
pub mod sshkey;

pub use compute::{
    BackendError, ComputeBackend, GatewayInfo, GatewayRequest, OutputSink, Placement, Resource,
    ResourceKind, ResourceName, VmInfo, VmRequest, VmSecretStore,
};
pub use hero_compute::{HeroComputeBackend, HeroComputeConfig};
pub use local::{LocalBackend, LocalConfig, DEFAULT_BOOTSTRAP_SCRIPT};
pub use manifest::{ManifestUser, Profiles};
pub use opentofu::{OpenTofuBackend, OpenTofuConfig};
pub use ssh::{ExitStatus, Line, SshClient, SshError, SshSession, SshTarget, Stream};
pub use sshkey::UserKeyPair;
