//! Binds the fleet methods of the SDK (`deployer.list_vms`, `deployer.check_health`). Thin: parse,
//! call the core.

use std::sync::Arc;

use hero_os_tfgrid_deployer_sdk::methods::{CheckHealth, ExtendVm, ListVms};

use super::health::HealthWatch;
use crate::provision::Provisioner;
use crate::rpc::Registry;

pub fn register(registry: &mut Registry, provisioner: Provisioner, watch: Arc<HealthWatch>) {
    registry.register_with::<ExtendVm, _, _>(provisioner.clone(), |p, c, params| async move {
        p.extend_vm(&c.actor, params).await
    });
    registry.register_with::<ListVms, _, _>(provisioner.clone(), |p, _, params| async move {
        p.list_vms(params.filter).await
    });
    registry.register_with::<CheckHealth, _, _>(
        (provisioner, watch),
        |(p, watch), _, params| async move {
            let filter = match params.user_id {
                Some(user_id) => Some(p.deployer().get_user(user_id).await?.forge_username),
                None => None,
            };
            watch.probe_now(params.user_id).await?;
            let mut list = p.list_vms(filter.clone()).await?;
            // The filter is a prefix: keep exactly the user asked for.
            if let Some(name) = filter {
                list.vms.retain(|v| v.forge_username == name);
            }
            Ok(list)
        },
    );
}
