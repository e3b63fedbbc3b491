//! The invitation an operator sends to the person a VM is for: a ready-to-paste message with the
//! URL, how to sign in and what to expect. One function, so the CLI (`vm invite`) and the
//! dashboard hand out the same words.
//!
//! The password is deliberately never in it: an invitation is pasted into email or a group chat,
//! and a password beside the URL and the login would make that one message enough to take the
//! machine. The [`Invitation::reminder`] (shown to the operator, not part of the message) says to
//! send the password separately, over another channel.

use serde::{Deserialize, Serialize};

use crate::jobs::VmRecord;
use crate::types::{User, VmStatus};

/// What to hand out for one ready VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub forge_username: String,
    pub url: String,
    /// A subject line for email.
    pub subject: String,
    /// The ready-to-paste message (plain text, no password).
    pub message: String,
    /// For the operator only: how to deliver the password (or why there is none to send).
    pub reminder: String,
}

/// Why there is no invitation yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvitationError {
    #[error("{user} has no VM yet: deploy one first (`vm deploy {user}`)")]
    NoVm { user: String },
    #[error("{user}'s VM is {state}, not ready: an invitation is for a VM that answers")]
    NotReady { user: String, state: String },
}

/// The Forge's host for people (`https://forge.ourworld.tf/` → `forge.ourworld.tf`).
fn forge_host(forge_url: &str) -> &str {
    let rest = forge_url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(forge_url);
    rest.trim_end_matches('/')
}

/// The invitation for `user`'s VM `vm` (the one `get_vm` calls current), signing in on the Forge
/// at `forge_url`.
pub fn invitation(
    user: &User,
    vm: Option<&VmRecord>,
    forge_url: &str,
) -> Result<Invitation, InvitationError> {
    let name = &user.forge_username;
    let vm = vm.ok_or_else(|| InvitationError::NoVm { user: name.clone() })?;
    let url = match (&vm.url, user.vm_status) {
        (Some(url), VmStatus::Ready) if vm.state == "ready" => url.clone(),
        _ => {
            return Err(InvitationError::NotReady {
                user: name.clone(),
                state: if vm.state == "ready" {
                    user.vm_status.as_str().to_owned()
                } else {
                    vm.state.clone()
                },
            })
        }
    };
    let forge = forge_host(forge_url);
    let greeting = user.display_name.as_deref().unwrap_or(name);
    let password_line = if user.initial_password_held {
        "Your password reaches you separately, in another message."
    } else {
        "Use the password of your existing Forge account."
    };
    let message = format!(
        "Hi {greeting},\n\
         \n\
         your personal Hero OS demo machine is ready:\n\
         \n\
         \x20   {url}\n\
         \n\
         How to get in:\n\
         1. Open the link. It sends you to the Forge ({forge}) to sign in.\n\
         2. Sign in with your Forge account: username {name}. {password_line}\n\
         3. The first time, the Forge asks whether the Hero OS demo may use your account: allow it.\n\
         4. You land on your own Hero OS. Only you (and the team's admins) can open this address;\n\
         \x20  anyone else is asked to sign in and turned away.\n\
         \n\
         It is a demo machine: do not keep anything on it you cannot lose.\n\
         If the page says the machine is down, reply to this message.\n"
    );
    let reminder = if user.initial_password_held {
        format!(
            "The password is deliberately not in this message. Send it separately, over another channel \
             (e.g. a direct chat message, not the same email): `hero_os_tfgrid_deployer user reveal-password {name}`."
        )
    } else {
        format!(
            "{name}'s Forge account existed before the deployer adopted it: they sign in with their own \
             password, and there is none to send."
        )
    };
    Ok(Invitation {
        forge_username: name.clone(),
        subject: format!("Your Hero OS demo machine: {url}"),
        url,
        message,
        reminder,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn user(status: VmStatus, held: bool) -> User {
        serde_json::from_value(serde_json::json!({
            "user_id": 7, "forge_username": "alice", "display_name": "Alice Example",
            "email": "a@x.org", "forge_user_id": 3, "forge_created": held,
            "forge_token_set": held, "forge_token_note": null, "initial_password_held": held,
            "setup_complete": true, "vm_status": status, "created_at": 0, "updated_at": 0
        }))
        .unwrap()
    }

    fn vm(state: &str, url: Option<&str>) -> VmRecord {
        serde_json::from_value(serde_json::json!({
            "vm_id": 1, "user_id": 7, "forge_username": "alice", "backend": "local",
            "name": "alice", "node_id": null, "state": state, "spec": {},
            "private_ip": null, "mycelium_ip": null, "url": url, "host_key_fingerprint": null,
            "deployer_version": "0", "created_at": 0, "updated_at": 0,
            "decommissioned_at": null, "ssh_key_fingerprint": null, "backend_id": null,
            "job_id": null, "ready_at": null
        }))
        .unwrap()
    }

    #[test]
    fn a_ready_vm_gets_a_message_without_the_password() {
        let v = vm("ready", Some("https://alice.gent01.grid.tf/"));
        let i = invitation(
            &user(VmStatus::Ready, true),
            Some(&v),
            "https://forge.ourworld.tf/",
        )
        .unwrap();
        assert!(i.message.contains("https://alice.gent01.grid.tf/"));
        assert!(i.message.contains("Hi Alice Example"));
        assert!(i
            .message
            .contains("Sign in with your Forge account: username alice"));
        assert!(i.message.contains("Forge (forge.ourworld.tf)"));
        assert!(i.message.contains("separately"));
        assert!(!i.message.to_lowercase().contains("password:"));
        assert!(i.reminder.contains("reveal-password alice"));
        assert!(i.subject.contains("https://alice.gent01.grid.tf/"));
    }

    #[test]
    fn an_adopted_account_has_no_password_to_send() {
        let v = vm("ready", Some("http://alice.localhost:8088/"));
        let i = invitation(
            &user(VmStatus::Ready, false),
            Some(&v),
            "http://127.0.0.1:3000",
        )
        .unwrap();
        assert!(i.message.contains("existing Forge account"));
        assert!(i.reminder.contains("none to send"));
        assert!(i.message.contains("Forge (127.0.0.1:3000)"));
    }

    #[test]
    fn no_invitation_before_ready() {
        let u = user(VmStatus::Provisioning, true);
        assert_eq!(
            invitation(&u, None, "x").unwrap_err(),
            InvitationError::NoVm {
                user: "alice".into()
            }
        );
        let v = vm("deploying", Some("http://alice.localhost:8088/"));
        let e = invitation(&u, Some(&v), "x").unwrap_err();
        assert!(e.to_string().contains("deploying"), "{e}");
        let v = vm("ready", None);
        assert!(invitation(&user(VmStatus::Ready, true), Some(&v), "x").is_err());
        let v = vm("ready", Some("http://alice.localhost:8088/"));
        let e = invitation(&user(VmStatus::Failed, true), Some(&v), "x").unwrap_err();
        assert!(e.to_string().contains("failed"), "{e}");
    }
}
