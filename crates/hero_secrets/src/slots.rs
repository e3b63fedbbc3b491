//! Every secret slot name the Hero services share, in one place: the deployer, hero_proxy, the
//! admin dashboard and the demo all name their slots from here, so a slot written by one is the
//! slot another reads (a typo would be a silent "not set"). A new slot is added here first.

/// The Forge site-admin token the deployer acts with.
pub const FORGE_ADMIN_TOKEN: &str = "deployer/forge_admin_token";
/// Forge usernames allowed into the admin dashboard and the VMs' admin group (one per line or
/// comma separated); read by hero_proxy and the dashboard, written by the operator and the demo.
pub const ADMIN_FORGE_USERS: &str = "deployer/ADMIN_FORGE_USERS";
/// The TFGrid mnemonic of the OpenTofu backend (only ever put in `tofu`'s environment).
pub const TFGRID_MNEMONIC: &str = "deployer/tfgrid_mnemonic";
/// The key that seals users' SSH private keys in sqlite (hex of 32 bytes).
pub const SSH_KEY_SEALING_KEY: &str = "deployer/ssh_key_sealing_key";

/// The slots of one deployer user live under this prefix (deleted together with the user).
pub fn user_prefix(user_id: i64) -> String {
    format!("deployer/users/{user_id}/")
}

/// The user's own Forge API token, minted at creation.
pub fn user_forge_token(user_id: i64) -> String {
    format!("{}forge_token", user_prefix(user_id))
}

/// The user's initial Forge password, until handed out.
pub fn user_initial_password(user_id: i64) -> String {
    format!("{}initial_password", user_prefix(user_id))
}

/// The client secret of the OAuth app the deployer made for the user's VM (`register_sso`).
pub fn user_oauth_client_secret(user_id: i64) -> String {
    format!("{}oauth_client_secret", user_prefix(user_id))
}

/// hero_proxy's OAuth client of a VM's cockpit, as the Hero stack reads it.
pub const COCKPIT_OAUTH_CLIENT_ID: &str = "cockpit/FORGE_OAUTH_CLIENT_ID";
pub const COCKPIT_OAUTH_CLIENT_SECRET: &str = "cockpit/FORGE_OAUTH_CLIENT_SECRET";
pub const COCKPIT_OAUTH_ISSUER: &str = "cockpit/FORGE_OAUTH_ISSUER";
/// The Forge login of the VM's owner: hero_proxy's `owner` policy admits that account (and the
/// admins of `ADMIN_FORGE_USERS`). Written by the deployer's `configure_sso` step.
pub const COCKPIT_FORGE_OWNER: &str = "cockpit/FORGE_OWNER";
/// A Forge token the cockpit's user stored themselves.
pub const COCKPIT_USER_FORGE_TOKEN: &str = "cockpit/USER_FORGE_TOKEN";

/// hero_proxy's seed of its signed identity assertions.
pub const PROXY_ASSERTION_SEED: &str = "hero_proxy/assertion_seed";

/// hero_proxy's client secret for an identity provider.
pub fn proxy_provider_client_secret(provider: &str) -> String {
    format!("hero_proxy/providers/{provider}/client_secret")
}

/// Parses a list of Forge logins as the slots above hold them (`ADMIN_FORGE_USERS`): comma- or
/// newline-separated, blanks ignored, lower-cased (Forgejo logins are case-insensitive). The one
/// parser: the proxy and the dashboard once split differently, so a newline-separated list let an
/// admin into one and not the other.
pub fn parse_login_list(value: &str) -> std::collections::BTreeSet<String> {
    value
        .split([',', '\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_name_is_valid() {
        for slot in [
            FORGE_ADMIN_TOKEN.to_owned(),
            ADMIN_FORGE_USERS.to_owned(),
            TFGRID_MNEMONIC.to_owned(),
            SSH_KEY_SEALING_KEY.to_owned(),
            user_forge_token(7),
            user_initial_password(7),
            user_oauth_client_secret(7),
            COCKPIT_OAUTH_CLIENT_ID.to_owned(),
            COCKPIT_OAUTH_CLIENT_SECRET.to_owned(),
            COCKPIT_OAUTH_ISSUER.to_owned(),
            COCKPIT_USER_FORGE_TOKEN.to_owned(),
            COCKPIT_FORGE_OWNER.to_owned(),
            PROXY_ASSERTION_SEED.to_owned(),
            proxy_provider_client_secret("forge"),
        ] {
            assert!(crate::validate_slot(&slot).is_ok(), "{slot}");
        }
        assert!(user_forge_token(7).starts_with(&user_prefix(7)));
    }

    #[test]
    fn login_lists_split_on_commas_and_newlines() {
        let want: std::collections::BTreeSet<String> = ["alice", "bob", "carol"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for text in [
            "alice,bob,carol",
            "Alice, bob ,CAROL",
            "alice\nbob\ncarol\n",
            "alice\r\nbob,\n\n carol",
            ",alice,,bob,carol,",
        ] {
            assert_eq!(parse_login_list(text), want, "{text:?}");
        }
        assert!(parse_login_list(" ,\n ").is_empty());
    }
}
