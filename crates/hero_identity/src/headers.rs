//! Every header name of the identity contract, in one place.
//!
//! Why one place: the proxy strips and injects exactly these names and backends read exactly these names; a typo on
//! either side would silently create a spoofable header (oauth2-proxy CVE-2025-64484 was a normalisation gap).

/// Local username of the signed-in user (the proxy's `users.username`, not necessarily the Forge login).
pub const X_HERO_USER: &str = "x-hero-user";
/// The signed-in user's context id (a decimal string), from their record in the proxy.
pub const X_HERO_CONTEXT: &str = "x-hero-context";
/// The user's login at their provider as the provider spells it (the Forge username): what an allowlist of Forge
/// logins must be compared with, since the local username is a lossy, first-come mapping of it.
pub const X_HERO_LOGIN: &str = "x-hero-login";
/// The user's claims, comma-separated, sorted, each valid per [`crate::Claim`].
pub const X_HERO_CLAIMS: &str = "x-hero-claims";
/// Provider id the user signed in with (e.g. `forge`).
pub const X_HERO_PROVIDER: &str = "x-hero-provider";
/// The provider's stable subject (`sub`), opaque (Forgejo: numeric string).
pub const X_HERO_EXTERNAL_ID: &str = "x-hero-external-id";
/// The user's current Forge access token; only on routes that opted into token pass-through.
pub const X_HERO_FORGE_TOKEN: &str = "x-hero-forge-token";
/// Ed25519-signed compact assertion (JWS, `alg: EdDSA`) over user, context, claims, provider, external id and expiry.
/// Backends that verify it do not have to trust the network path.
pub const X_HERO_ASSERTION: &str = "x-hero-assertion";

/// Every inbound header whose normalised name starts with this prefix is removed by the proxy before injection.
pub const HERO_HEADER_PREFIX: &str = "x-hero-";

/// Path where the proxy publishes its assertion-verification key as a JWK (`{"kty":"OKP","crv":"Ed25519",...}`).
pub const PROXY_KEY_PATH: &str = "/.well-known/hero-proxy-key";

/// All injected identity headers (the assertion included).
pub const IDENTITY_HEADERS: [&str; 8] = [
    X_HERO_USER,
    X_HERO_LOGIN,
    X_HERO_CONTEXT,
    X_HERO_CLAIMS,
    X_HERO_PROVIDER,
    X_HERO_EXTERNAL_ID,
    X_HERO_FORGE_TOKEN,
    X_HERO_ASSERTION,
];

/// The strip rule: a header is reserved for the proxy if its name, lower-cased with `_` turned into `-`, starts with
/// `x-hero-`. Applies to names as they arrive on the wire (`X_Hero_User`, `X-HERO-CLAIMS`, ...), because some
/// backends (CGI-style, WSGI, nginx `underscores_in_headers`) fold `_` and `-` together.
pub fn is_reserved_header(name: &str) -> bool {
    let bytes = name.as_bytes();
    let prefix = HERO_HEADER_PREFIX.as_bytes();
    if bytes.len() < prefix.len() {
        return false;
    }
    bytes.iter().zip(prefix.iter()).all(|(b, p)| {
        let n = match b.to_ascii_lowercase() {
            b'_' => b'-',
            other => other,
        };
        n == *p
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_rule_normalises_case_and_underscores() {
        for name in [
            "X-Hero-User",
            "x-hero-user",
            "X_Hero_User",
            "X-HERO-CLAIMS",
            "x_hero_",
            "X-hero_Anything",
        ] {
            assert!(is_reserved_header(name), "{name}");
        }
        for name in ["x-hero", "x-heroes", "hero-user", "x-forwarded-user", ""] {
            assert!(!is_reserved_header(name), "{name}");
        }
    }

    #[test]
    fn every_identity_header_is_reserved() {
        for h in IDENTITY_HEADERS {
            assert!(is_reserved_header(h));
        }
    }
}
