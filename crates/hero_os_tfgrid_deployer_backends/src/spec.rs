//! The VM spec of a Hero OS demo VM and the node capacity it needs.
//!
//! Units follow the grid (zosbase `pkg/gridtypes/common.go`): 1 MB = 2^20 bytes, 1 GB = 2^30 bytes.
//! The spec is data, not constants scattered through backends, so a job can record exactly what
//! it asked for and every backend renders the same numbers.

use serde::{Deserialize, Serialize};

/// One mebibyte: the grid's "MB".
pub const MIB: u64 = 1 << 20;
/// One gibibyte: the grid's "GB".
pub const GIB: u64 = 1 << 30;

/// The Ubuntu 24.04 micro-VM flist (tfgrid-sdk-ts `MICROVMS_UBUNTU_24`).
pub const UBUNTU_24_MICROVM_FLIST: &str =
    "https://hub.grid.tf/tf-official-vms/ubuntu-24.04-latest.flist";
/// The entrypoint that goes with [`UBUNTU_24_MICROVM_FLIST`].
pub const UBUNTU_24_MICROVM_ENTRYPOINT: &str = "/sbin/zinit init";

/// What a VM gets. [`Default`] is the demo spec: 16 vCPU, 8 GiB RAM, 16 GiB rootfs, a 200 GiB data
/// disk, Ubuntu 24.04 micro VM, reachable over mycelium only (no public IP, no planetary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// vCPUs (1..32 on the grid). CPU is overcommitted on the grid and never filtered on.
    pub cpu: u32,
    /// Memory in MB (2^20 bytes), 256..262144.
    pub memory_mb: u64,
    /// Root filesystem in MB (2^20 bytes), 1024..10485760.
    pub rootfs_mb: u64,
    /// The data disk in GB (2^30 bytes), 1..10240; mounted at `/data`.
    pub disk_gb: u64,
    /// Flist URL.
    pub flist: String,
    /// Entrypoint of the flist.
    pub entrypoint: String,
    /// Give the VM a mycelium IP (the only network the demo uses).
    pub mycelium: bool,
    /// Public IPv4 (always false for the demo).
    pub public_ip: bool,
    /// Yggdrasil/planetary IP (always false for the demo).
    pub planetary: bool,
}

impl Default for VmSpec {
    fn default() -> Self {
        Self {
            cpu: 16,
            memory_mb: 8192,
            rootfs_mb: 16384,
            disk_gb: 200,
            flist: UBUNTU_24_MICROVM_FLIST.to_string(),
            entrypoint: UBUNTU_24_MICROVM_ENTRYPOINT.to_string(),
            mycelium: true,
            public_ip: false,
            planetary: false,
        }
    }
}

impl VmSpec {
    /// The node capacity this VM consumes, in bytes: MRU = memory, SRU = rootfs + data disk
    /// (both live on SSD on the grid), HRU = 0.
    pub fn required_capacity(&self) -> Capacity {
        Capacity {
            mru: self.memory_mb.saturating_mul(MIB),
            sru: self
                .rootfs_mb
                .saturating_mul(MIB)
                .saturating_add(self.disk_gb.saturating_mul(GIB)),
            hru: 0,
        }
    }
}

/// Memory / SSD / HDD amounts in bytes (gridproxy's MRU, SRU, HRU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// Memory, bytes.
    pub mru: u64,
    /// SSD, bytes.
    pub sru: u64,
    /// HDD, bytes.
    pub hru: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_spec_needs_8gib_memory_and_216gib_ssd() {
        let spec = VmSpec::default();
        let need = spec.required_capacity();
        assert_eq!(need.mru, 8 * GIB);
        assert_eq!(need.mru, 8_589_934_592);
        assert_eq!(need.sru, 216 * GIB);
        assert_eq!(need.sru, 231_928_233_984);
        assert_eq!(need.hru, 0);
        assert_eq!(spec.cpu, 16);
        assert!(spec.mycelium && !spec.public_ip && !spec.planetary);
    }
}
