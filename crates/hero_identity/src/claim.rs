//! Claims: the stack's unit of authorization, and the rules that match them.
//!
//! Grammar (one place, shared by the proxy's `roles.add_claim` and every backend):
//! `^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}(\.[a-zA-Z0-9][a-zA-Z0-9_-]{0,62})*$`, at most 255 characters and 8 segments.
//! Claims never contain wildcards; a trailing `.*` exists only on the rule side ([`ClaimRule`]).

use std::fmt;
use std::str::FromStr;

use crate::error::IdentityError;

/// Longest claim, in bytes (all ASCII).
pub const MAX_CLAIM_LEN: usize = 255;
/// Most dot-separated segments in a claim.
pub const MAX_CLAIM_SEGMENTS: usize = 8;
/// Longest segment (first char + up to 62 more).
pub const MAX_SEGMENT_LEN: usize = 63;

/// Prefixes only the proxy may emit; `roles.add_claim` refuses them so no role can impersonate a user or group.
pub const RESERVED_PREFIXES: [&str; 2] = ["users", "groups"];
/// Legacy admin claim, emitted together with `groups.admin` during the deprecation window.
pub const LEGACY_ADMIN_CLAIM: &str = "admin";

/// A validated claim such as `dns.zone.write`. Construct with [`Claim::parse`]; the inner string is always valid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Claim(String);

impl Claim {
    /// Validates `s` against the grammar.
    pub fn parse(s: &str) -> Result<Claim, IdentityError> {
        validate_claim(s)?;
        Ok(Claim(s.to_owned()))
    }

    /// The claim text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dot-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// True if the claim lives under a prefix only the proxy may emit (`users.*`, `groups.*`, `admin`), in any
    /// case: the grammar allows upper case, so `Groups.admin` or `ADMIN` as a role was harmless only while every
    /// backend compared claims exactly; one that lower-cased them would grant admin.
    pub fn is_reserved(&self) -> bool {
        let lower = self.0.to_ascii_lowercase();
        let first = lower.split('.').next().unwrap_or_default();
        lower == LEGACY_ADMIN_CLAIM || (RESERVED_PREFIXES.contains(&first) && lower.contains('.'))
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Claim {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Claim::parse(s)
    }
}

impl serde::Serialize for Claim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Claim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Claim::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn validate_segment(seg: &str, whole: &str) -> Result<(), IdentityError> {
    let invalid = |why: &'static str| IdentityError::InvalidClaim {
        claim: truncate(whole),
        why,
    };
    let mut chars = seg.bytes();
    match chars.next() {
        None => return Err(invalid("empty segment")),
        Some(c) if c.is_ascii_alphanumeric() => {}
        Some(_) => return Err(invalid("segment must start with an ASCII letter or digit")),
    }
    if seg.len() > MAX_SEGMENT_LEN {
        return Err(invalid("segment longer than 63 characters"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
        return Err(invalid(
            "segment may only contain ASCII letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

/// Checks `s` against the claim grammar without allocating.
pub fn validate_claim(s: &str) -> Result<(), IdentityError> {
    if s.len() > MAX_CLAIM_LEN {
        return Err(IdentityError::InvalidClaim {
            claim: truncate(s),
            why: "longer than 255 characters",
        });
    }
    let mut count = 0usize;
    for seg in s.split('.') {
        count += 1;
        if count > MAX_CLAIM_SEGMENTS {
            return Err(IdentityError::InvalidClaim {
                claim: truncate(s),
                why: "more than 8 segments",
            });
        }
        validate_segment(seg, s)?;
    }
    Ok(())
}

/// Error messages carry at most 64 characters of untrusted input.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A rule that a set of claims is checked against.
///
/// * exact: `dns.zone.write` matches only that claim;
/// * prefix: `engineers.*` matches every claim strictly below `engineers` (`engineers.alice`, `engineers.a.b`), not
///   `engineers` itself, because "everything under X" should not silently include the bare X permission.
///
/// There is no bare `*` rule: "any signed-in user" is the route policy `sso`, not a claim rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClaimRule {
    /// Matches one claim exactly.
    Exact(Claim),
    /// Matches every claim that starts with `<prefix>.`.
    Prefix(Claim),
}

impl ClaimRule {
    /// Parses `dns.zone.write` or `engineers.*`.
    pub fn parse(s: &str) -> Result<ClaimRule, IdentityError> {
        match s.strip_suffix(".*") {
            Some(prefix) => Ok(ClaimRule::Prefix(Claim::parse(prefix)?)),
            None => Ok(ClaimRule::Exact(Claim::parse(s)?)),
        }
    }

    /// Does this single claim satisfy the rule?
    pub fn matches(&self, claim: &Claim) -> bool {
        self.matches_str(claim.as_str())
    }

    /// Same as [`ClaimRule::matches`] on raw text (already validated by the caller).
    pub fn matches_str(&self, claim: &str) -> bool {
        match self {
            ClaimRule::Exact(c) => c.as_str() == claim,
            ClaimRule::Prefix(p) => claim
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1),
        }
    }

    /// Does any claim of the set satisfy the rule?
    pub fn matches_any<'a, I: IntoIterator<Item = &'a Claim>>(&self, claims: I) -> bool {
        claims.into_iter().any(|c| self.matches(c))
    }
}

impl fmt::Display for ClaimRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimRule::Exact(c) => write!(f, "{c}"),
            ClaimRule::Prefix(p) => write!(f, "{p}.*"),
        }
    }
}

impl FromStr for ClaimRule {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClaimRule::parse(s)
    }
}

/// Parses the `X-Hero-Claims` value (comma-separated, surrounding blanks ignored, empty value = no claims).
pub fn parse_claims_header(value: &str) -> Result<Vec<Claim>, IdentityError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Claim::parse)
        .collect()
}

/// Formats claims for `X-Hero-Claims` (sorted, comma-separated).
pub fn format_claims_header<'a, I: IntoIterator<Item = &'a Claim>>(claims: I) -> String {
    let mut v: Vec<&str> = claims.into_iter().map(Claim::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_examples() {
        for ok in [
            "dns.zone.write",
            "a",
            "A1",
            "engineers.alice",
            "x_y-z.0",
            "a.b.c.d.e.f.g.h",
        ] {
            assert!(Claim::parse(ok).is_ok(), "{ok}");
        }
        let long_seg = "a".repeat(64);
        let too_long = ["abcdefg"; 40].join(".");
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "-a",
            "_a",
            "a.-b",
            "a b",
            "a*",
            "a.*",
            "é",
            "a.b.c.d.e.f.g.h.i",
            long_seg.as_str(),
            too_long.as_str(),
            "a,b",
            "a/b",
        ] {
            assert!(Claim::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Claim::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn rules() {
        let p = ClaimRule::parse("engineers.*").unwrap();
        assert!(p.matches_str("engineers.alice"));
        assert!(p.matches_str("engineers.a.b"));
        assert!(!p.matches_str("engineers"));
        assert!(!p.matches_str("engineersx.alice"));
        let e = ClaimRule::parse("dns.zone.write").unwrap();
        assert!(e.matches_str("dns.zone.write"));
        assert!(!e.matches_str("dns.zone.write.x"));
        assert!(ClaimRule::parse("*").is_err());
        assert!(ClaimRule::parse("a.*.b").is_err());
        assert_eq!(p.to_string(), "engineers.*");
    }

    #[test]
    fn reserved() {
        assert!(Claim::parse("users.alice").unwrap().is_reserved());
        assert!(Claim::parse("groups.admin").unwrap().is_reserved());
        assert!(Claim::parse("admin").unwrap().is_reserved());
        for spelled in [
            "ADMIN",
            "Admin",
            "Groups.admin",
            "GROUPS.ADMIN",
            "Users.bob",
            "uSeRs.bob",
        ] {
            assert!(Claim::parse(spelled).unwrap().is_reserved(), "{spelled}");
        }
        assert!(!Claim::parse("users").unwrap().is_reserved());
        assert!(!Claim::parse("dns.users").unwrap().is_reserved());
    }

    #[test]
    fn header_round_trip() {
        let c = parse_claims_header(" b.x , a ,,").unwrap();
        assert_eq!(format_claims_header(&c), "a,b.x");
        assert!(parse_claims_header("a,b c").is_err());
        assert!(parse_claims_header("").unwrap().is_empty());
    }
}
