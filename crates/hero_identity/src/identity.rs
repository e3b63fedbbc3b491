//! The identity a backend receives, and how it is read from request headers.

use std::net::SocketAddr;

use http::HeaderMap;

use crate::assertion::AssertionVerifier;
use crate::claim::{parse_claims_header, Claim, ClaimRule};
use crate::error::IdentityError;
use crate::headers::{
    X_HERO_ASSERTION, X_HERO_CLAIMS, X_HERO_CONTEXT, X_HERO_EXTERNAL_ID, X_HERO_FORGE_TOKEN,
    X_HERO_LOGIN, X_HERO_PROVIDER, X_HERO_USER,
};

/// Whether `name` has the shape of a hero_proxy local username: `[a-z0-9_-]`, starting with a letter or digit,
/// at most 64 bytes (32 from the provider's login, plus a collision suffix such as `-2`). The proxy makes no other
/// (`hero_proxy::store::sanitize_username`), so anything else in `sub` or `X-Hero-User` — empty, upper case, a
/// newline, a confusable letter — is refused before a backend uses it as a key or shows it.
pub fn is_local_username(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || *c == b'_' || *c == b'-')
}

/// A signed-in user as established by hero_proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Local username (`X-Hero-User`).
    pub user: String,
    /// The signed-in user's context id, a decimal string (`X-Hero-Context`, the assertion's `ctx`).
    pub context: Option<String>,
    /// Claims, sorted (`X-Hero-Claims`).
    pub claims: Vec<Claim>,
    /// Provider id (`X-Hero-Provider`).
    pub provider: String,
    /// The login at the provider (`X-Hero-Login`; the assertion's `lgn`): compare allowlists of Forge logins with
    /// this and `provider`, never with `user`.
    pub login: String,
    /// Provider subject (`X-Hero-External-Id`).
    pub external_id: String,
    /// Assertion expiry (unix seconds); `None` in dev mode.
    pub expires_at: Option<u64>,
    /// True when it came from a verified signature, false in dev mode.
    pub verified: bool,
}

impl Identity {
    /// Does any claim satisfy `rule`?
    pub fn has(&self, rule: &ClaimRule) -> bool {
        rule.matches_any(&self.claims)
    }

    /// `Ok` if a claim satisfies `rule`, else [`IdentityError::Forbidden`] (403).
    pub fn require(&self, rule: &ClaimRule) -> Result<(), IdentityError> {
        if self.has(rule) {
            Ok(())
        } else {
            Err(IdentityError::Forbidden {
                user: self.user.clone(),
                rule: rule.to_string(),
            })
        }
    }

    /// Is the user an admin (`groups.admin`, or the legacy `admin` during the deprecation window)?
    pub fn is_admin(&self) -> bool {
        self.claims
            .iter()
            .any(|c| c.as_str() == "groups.admin" || c.as_str() == "admin")
    }
}

/// How a backend trusts the identity headers.
#[derive(Clone, Debug)]
pub enum IdentityVerifier {
    /// Production: the `X-Hero-Assertion` must verify against the proxy's key; plain headers, if present, must agree.
    Signed(AssertionVerifier),
    /// DEVELOPMENT ONLY: trust the plain `X-Hero-*` headers without a signature, and only when the TCP peer is a
    /// loopback address (so a developer can `curl -H 'X-Hero-User: alice'` against a local backend). A request whose
    /// peer address is unknown (no `ConnectInfo<SocketAddr>`, e.g. a unix socket) is refused, and so is one whose
    /// `Host` is not a loopback name ([`is_loopback_host`]): a web page whose own domain resolves to 127.0.0.1 (DNS
    /// rebinding) reaches the backend from the developer's browser, over loopback, as same-origin.
    DevUnsignedLoopback,
    /// The plain headers as given, with no check of the transport: for a backend nothing but the SSO edge can reach
    /// (a unix socket only the proxy's user may open, a firewalled port; the contract's option 2), which makes that
    /// check itself. The signature is the stronger guarantee.
    TrustedTransport,
}

/// Whether the request's `Host` names this machine's loopback: `localhost` or a loopback address, with or without
/// a port. Why dev mode asks: a loopback peer alone does not mean a local caller, since a browser follows a
/// rebound DNS name to 127.0.0.1 and sends that name as the `Host`.
pub fn is_loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, IdentityError> {
    let mut it = h.get_all(name).iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(IdentityError::Malformed("duplicated identity header"));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| IdentityError::Malformed("non-ASCII identity header"))
}

impl IdentityVerifier {
    /// Establishes the identity from `headers`. `peer` is the TCP peer (for dev mode), `now` unix seconds.
    pub fn verify_headers(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        now: u64,
    ) -> Result<Identity, IdentityError> {
        match self {
            IdentityVerifier::Signed(v) => {
                let token = header(headers, X_HERO_ASSERTION)?.ok_or(IdentityError::Missing)?;
                let id = v.verify_identity(token, now)?;
                check_agrees(headers, X_HERO_USER, Some(&id.user))?;
                check_agrees(headers, X_HERO_PROVIDER, Some(&id.provider))?;
                check_agrees(headers, X_HERO_LOGIN, Some(&id.login))?;
                check_agrees(headers, X_HERO_EXTERNAL_ID, Some(&id.external_id))?;
                check_agrees(headers, X_HERO_CONTEXT, id.context.as_deref())?;
                if let Some(c) = header(headers, X_HERO_CLAIMS)? {
                    // An unreadable plain header disagrees with the assertion as much as a different one: 401,
                    // not the 500 of a claim the backend itself got wrong.
                    if parse_claims_header(c).ok().as_ref() != Some(&id.claims) {
                        return Err(IdentityError::HeaderMismatch(X_HERO_CLAIMS));
                    }
                }
                Ok(id)
            }
            IdentityVerifier::DevUnsignedLoopback => {
                // `to_canonical`: a dual-stack listener sees an IPv4 loopback peer as `::ffff:127.0.0.1`.
                if !peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
                    || !is_loopback_host(headers)
                {
                    return Err(IdentityError::DevModeNotLoopback);
                }
                IdentityVerifier::TrustedTransport.verify_headers(headers, peer, now)
            }
            IdentityVerifier::TrustedTransport => {
                let user = header(headers, X_HERO_USER)?
                    .ok_or(IdentityError::Missing)?
                    .to_owned();
                if !is_local_username(&user) {
                    return Err(IdentityError::Malformed(
                        "X-Hero-User is not a local username",
                    ));
                }
                let login = header(headers, X_HERO_LOGIN)?
                    .unwrap_or(user.as_str())
                    .to_owned();
                let mut claims =
                    parse_claims_header(header(headers, X_HERO_CLAIMS)?.unwrap_or_default())
                        .map_err(|_| {
                            IdentityError::Malformed("X-Hero-Claims is not a claims list")
                        })?;
                claims.sort();
                Ok(Identity {
                    user,
                    context: header(headers, X_HERO_CONTEXT)?.map(str::to_owned),
                    claims,
                    provider: header(headers, X_HERO_PROVIDER)?
                        .unwrap_or("dev")
                        .to_owned(),
                    login,
                    external_id: header(headers, X_HERO_EXTERNAL_ID)?
                        .unwrap_or_default()
                        .to_owned(),
                    expires_at: None,
                    verified: false,
                })
            }
        }
    }
}

fn check_agrees(
    headers: &HeaderMap,
    name: &'static str,
    expected: Option<&str>,
) -> Result<(), IdentityError> {
    match (header(headers, name)?, expected) {
        (None, _) => Ok(()),
        (Some(v), Some(e)) if v == e => Ok(()),
        _ => Err(IdentityError::HeaderMismatch(name)),
    }
}

/// The user's Forge access token, present only on routes with token pass-through (`X-Hero-Forge-Token`).
pub fn forge_token(headers: &HeaderMap) -> Option<&str> {
    // One, or none: with two the first was taken, and the proxy only ever sends one.
    header(headers, X_HERO_FORGE_TOKEN).ok().flatten()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_forge_token_is_one_header_or_none() {
        let mut h = HeaderMap::new();
        assert_eq!(forge_token(&h), None);
        h.append(X_HERO_FORGE_TOKEN, "t1".parse().unwrap());
        assert_eq!(forge_token(&h), Some("t1"));
        h.append(X_HERO_FORGE_TOKEN, "t2".parse().unwrap());
        assert_eq!(forge_token(&h), None, "two: neither is taken");
    }
}
