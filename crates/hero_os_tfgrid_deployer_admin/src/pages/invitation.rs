//! The invitation card on a user's page once their VM is ready: the URL and the ready-to-paste
//! message (the SDK's `invitation`, the same words as `vm invite`), each with a copy button, and
//! the reminder that the password is not in it and goes separately.

use hero_os_tfgrid_deployer_sdk::invitation::invitation;
use hero_os_tfgrid_deployer_sdk::jobs::VmDetails;
use hero_os_tfgrid_deployer_sdk::types::{ServerInfo, User, VmStatus};
use maud::{html, Markup};

/// The card, or nothing while the VM is not ready.
pub fn card(info: &ServerInfo, user: &User, vm: Option<&VmDetails>) -> Option<Markup> {
    if user.vm_status != VmStatus::Ready {
        return None;
    }
    let inv = invitation(user, vm.and_then(|v| v.vm.as_ref()), &info.forge_url).ok()?;
    Some(html! {
        section.card data-testid="invitation" {
            h2 { "Invitation" }
            p.muted { "Send this to " (inv.forge_username) ". " (inv.reminder) }
            div.secret {
                code #invite-url data-testid="invite-url" { (inv.url) }
                button type="button" data-copy-target="invite-url" data-testid="copy-url" hidden { "Copy URL" }
            }
            pre.invitation #invite-message data-testid="invite-message" { (inv.message) }
            div.actions {
                button type="button" data-copy-target="invite-message" data-testid="copy-message" hidden { "Copy message" }
            }
        }
    })
}
