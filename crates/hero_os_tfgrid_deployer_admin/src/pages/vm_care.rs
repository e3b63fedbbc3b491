//! The "Look after this VM" card on a user's page while their VM is ready and no job runs:
//! redeploy with another service profile (a job, like Repair) and move the expiry (N days
//! later, or never). Both are plain POST forms with the CSRF token; the server checks the
//! values and audits the change.

use hero_os_tfgrid_deployer_sdk::jobs::VmDetails;
use hero_os_tfgrid_deployer_sdk::types::{ServerInfo, User, VmStatus};
use maud::{html, Markup};

use crate::auth::Admin;
use crate::layout::csrf_field;

/// The card, or nothing without a ready VM.
pub fn card(
    admin: &Admin,
    info: &ServerInfo,
    user: &User,
    vm: Option<&VmDetails>,
) -> Option<Markup> {
    let vm = vm.and_then(|v| v.vm.as_ref())?;
    if user.vm_status != VmStatus::Ready || vm.state != "ready" {
        return None;
    }
    let base = format!("/users/{}", user.user_id);
    let current = vm
        .profile
        .clone()
        .or_else(|| info.default_profile.clone())
        .unwrap_or_default();
    Some(html! {
        section.card data-testid="vm-care" {
            h2 { "Look after this VM" }
            div.grid {
                form method="post" action=(format!("{base}/redeploy")) data-testid="redeploy-form"
                    data-confirm=(format!("Redeploy the VM of {} with the chosen profile? Its services are set up again on the same VM; the URL and sign-in stay.", user.forge_username)) {
                    (csrf_field(admin))
                    input type="hidden" name="confirm" value="";
                    label for="profile" { "Service profile" }
                    p.muted { "Now: " code data-testid="current-profile" { (current) } }
                    select #profile name="profile" data-testid="redeploy-profile" {
                        @for p in &info.profiles {
                            option value=(p) selected[*p == current] { (p) }
                        }
                    }
                    button type="submit" data-testid="redeploy" { "Redeploy" }
                }
                form method="post" action=(format!("{base}/extend")) data-testid="extend-form" {
                    (csrf_field(admin))
                    label for="days" { "Expiry" }
                    p.muted { "Now: " @match vm.expires_at { Some(at) => (crate::time::utc(at)), None => "never" } }
                    div.actions {
                        input #days type="number" name="days" value="14" min="1" max="3650" aria-label="Days later" data-testid="extend-days";
                        button type="submit" data-testid="extend" { "Extend by days" }
                        button type="submit" name="never" value="yes" data-testid="extend-never" { "Never expire" }
                    }
                }
            }
        }
    })
}
