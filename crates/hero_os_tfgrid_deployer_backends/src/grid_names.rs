//! Every name the deployer puts on the ThreeFold Grid, decided here and nowhere else.
//!
//! Three rule sets meet, and a name must pass all of them (sources in `docs/provisioning.md`):
//! * the provider's schema: every `name` matches `^[a-zA-Z0-9_]+$`;
//! * the grid client (`grid-client/workloads/deployment.go` `validateName`): deployment, network,
//!   VM, disk, mount and gateway names are at most [`MAX_GRID_NAME_LEN`] = 36 characters;
//! * a gateway name is also a TFChain name contract (`pallet-smart-contract`): 3 to 64 characters
//!   of `a-z 0-9 - _`, unique on the whole network, and it becomes the DNS label of the public URL
//!   `<label>.<node domain>`, so it must be an RFC 1123 label too (no `_`).
//!
//! The deployer's own identity of a user's resources stays [`ResourceName`]
//! (`hero_u<user id>_<grid name>`, used for working dirs and reconcile); the grid only ever sees
//! the names derived from it here.

use crate::compute::ResourceName;

/// The grid client's limit on deployment, network, VM, disk, mount and gateway names.
pub const MAX_GRID_NAME_LEN: usize = 36;
/// Suffix of the user's `grid_network` name.
pub const NETWORK_SUFFIX: &str = "_net";
/// The data disk's name (and the mount's, which names the disk it mounts).
pub const DISK_NAME: &str = "data";
/// TFChain's minimum name-contract length (`NameContractNameTooShort`).
pub const MIN_GATEWAY_LABEL_LEN: usize = 3;

/// The grid names of one user's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridNames {
    /// `grid_deployment.name` and the VM's `name`.
    pub deployment: String,
    /// `grid_network.name`: `<deployment><NETWORK_SUFFIX>`.
    pub network: String,
    /// The data disk and its mount.
    pub disk: &'static str,
}

impl GridNames {
    /// Names for `name`. The deployment name is the resource name cut to
    /// `36 − len("_net")` = 32 characters, so the network name fits too. Cutting keeps it unique:
    /// the `hero_u<id>_` prefix is at most 26 characters (ids are `i64`), always kept whole, and no
    /// two users share an id, and `<id>_` is prefix-free (no leading zeros).
    pub fn for_resource(name: &ResourceName) -> Self {
        let full = name.to_string();
        let max = MAX_GRID_NAME_LEN - NETWORK_SUFFIX.len();
        // ASCII only (ResourceName guarantees `[a-zA-Z0-9_]`), so byte slicing is char slicing.
        let deployment = full.get(..max).unwrap_or(&full).to_string();
        Self {
            network: format!("{deployment}{NETWORK_SUFFIX}"),
            deployment,
            disk: DISK_NAME,
        }
    }
}

/// Why a gateway label is not acceptable; `None` when it is.
///
/// The intersection of the three rule sets above: `[a-z0-9]` only (the provider refuses `-`, DNS
/// refuses `_`, TFChain refuses upper case), 3 to 36 characters.
pub fn gateway_label_problem(label: &str) -> Option<String> {
    let len = label.chars().count();
    if len < MIN_GATEWAY_LABEL_LEN {
        return Some(format!(
            "gateway label {label:?} is {len} characters; TFChain name contracts need at least {MIN_GATEWAY_LABEL_LEN}"
        ));
    }
    if len > MAX_GRID_NAME_LEN {
        return Some(format!(
            "gateway label {label:?} is {len} characters; the grid client allows at most {MAX_GRID_NAME_LEN}"
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        return Some(format!(
            "gateway label {label:?} contains {c:?}; only a-z and 0-9 are a DNS label, a provider name and a TFChain name at once"
        ));
    }
    None
}

/// The gateway labels to try for `name`, in order; every one passes [`gateway_label_problem`].
///
/// 1. the grid name without `_` (`jan-de-vries` → `jandevries`), cut to 36 characters, when it
///    has at least 3: the readable URL;
/// 2. `<that, cut>u<user id>` (`jandevriesu42`): the deterministic fallback when the first is
///    taken by someone else on the network (name contracts are network-wide) or too short
///    (`ab` → `abu7`). The user id makes it ours alone among the deployer's users.
///
/// When both are taken the backend reports [`crate::BackendError::NameTaken`] naming both.
pub fn gateway_labels(name: &ResourceName) -> Vec<String> {
    let compact: String = name
        .grid_name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut out = Vec::with_capacity(2);
    let primary: String = compact.chars().take(MAX_GRID_NAME_LEN).collect();
    if gateway_label_problem(&primary).is_none() {
        out.push(primary);
    }
    let id = name.user_id().to_string();
    let keep = MAX_GRID_NAME_LEN.saturating_sub(id.len() + 1);
    let head: String = compact.chars().take(keep).collect();
    let fallback = format!("{head}u{id}");
    if gateway_label_problem(&fallback).is_none() && !out.contains(&fallback) {
        out.push(fallback);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rn(id: i64, g: &str) -> ResourceName {
        ResourceName::new(id, g).unwrap()
    }

    #[test]
    fn short_names_are_kept_and_long_ones_cut_to_fit() {
        let n = GridNames::for_resource(&rn(42, "jan_de_vries"));
        assert_eq!(n.deployment, "hero_u42_jan_de_vries");
        assert_eq!(n.network, "hero_u42_jan_de_vries_net");
        let long = GridNames::for_resource(&rn(i64::MAX, &"a".repeat(40)));
        assert_eq!(long.deployment.len(), 32);
        assert!(long.deployment.starts_with("hero_u9223372036854775807_"));
        assert_eq!(long.network.len(), 36);
    }

    #[test]
    fn labels_are_readable_first_then_carry_the_user_id() {
        assert_eq!(
            gateway_labels(&rn(42, "jan_de_vries")),
            ["jandevries", "jandevriesu42"]
        );
        assert_eq!(gateway_labels(&rn(7, "ab")), ["abu7"]);
        assert_eq!(gateway_labels(&rn(0, "a")), ["au0"]);
        let l = gateway_labels(&rn(i64::MAX, &"b".repeat(40)));
        assert_eq!(l[0], "b".repeat(36));
        assert_eq!(l[1], format!("{}u{}", "b".repeat(16), i64::MAX));
        assert!(gateway_label_problem("jan_de_vries").is_some());
        assert!(gateway_label_problem("ab").is_some());
        assert!(gateway_label_problem("Alice").is_some());
        assert!(gateway_label_problem("al-ice").is_some());
        assert!(gateway_label_problem(&"a".repeat(37)).is_some());
        assert!(gateway_label_problem("abc").is_none());
    }
}
