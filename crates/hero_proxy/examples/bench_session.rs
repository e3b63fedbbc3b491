//! Benchmark helper (stand-in for a real sign-in): prepares a proxy state directory with a provisioned user, a
//! `forge` provider whose issuer is never contacted, a token expiry far in the future, and one session; prints the
//! `__Host-hero_session=<id>` cookie pair. The proxy then runs its full session path for that cookie (session
//! lookup, claims, token-freshness check, header rewrite, signed assertion) without a live identity provider.
//!
//! Usage: `cargo run --release --example bench_session -- <state_dir>` (before starting the proxy on that dir).

use std::sync::Arc;

use anyhow::Context as _;
use hero_proxy::clock::{Clock, SystemClock};
use hero_proxy::session::{Sessions, SESSION_COOKIE};
use hero_proxy::store::{ProviderRow, Store};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: bench_session <state_dir>")?;
    let store = Arc::new(Store::open(
        &std::path::Path::new(&dir).join("hero_proxy.db"),
    )?);
    let now = SystemClock.now();
    store.upsert_provider(&ProviderRow {
        id: "forge".into(),
        issuer: "http://127.0.0.1:9".into(),
        client_id: "bench".into(),
        scope: hero_proxy::oidc::FORGE_SCOPE.into(),
    })?;
    let user = store.provision("forge", "4242", "bench", now)?;
    store.create_group("bench-team")?;
    store.add_user_to_group("bench-team", user.id)?;
    store.create_role("bench-role")?;
    store.add_role_claim("bench-role", "dns.zone.write")?;
    store.grant_role("bench-team", "bench-role")?;
    store.set_token_expiry(
        "forge",
        &hero_proxy::vault::identity_hash("4242"),
        now + 10 * 365 * 86400,
    )?;
    let sessions = Sessions::new(store, 86400, 86400);
    let user = hero_proxy::store::sanitize_username("bench");
    let user = sessions_user(&dir, &user)?;
    let id = sessions.create(&user, now)?;
    println!("{SESSION_COOKIE}={id}");
    Ok(())
}

fn sessions_user(dir: &str, name: &str) -> anyhow::Result<hero_proxy::store::User> {
    let store = Store::open(&std::path::Path::new(dir).join("hero_proxy.db"))?;
    store.user_by_name(name)?.context("bench user missing")
}
