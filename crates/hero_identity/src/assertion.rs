//! The signed identity assertion: a compact JWS (`alg: EdDSA`, Ed25519) the proxy puts in `X-Hero-Assertion`.
//!
//! Why signed: header stripping plus network isolation is the first line; a signature makes a forged or replayed
//! identity detectable even if a backend port is reachable by something other than the proxy (Pomerium's lesson).
//! Why Ed25519: small keys, deterministic signatures, fast enough to sign per session and verify per request.
//! Why an audience: every backend behind the proxy receives assertions, so without `aud` any of them could replay
//! a user's assertion to another backend until it expires. Each assertion names the one route it was made for
//! (`aud` = the route's id) and a verifier is built for one audience and refuses every other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::claim::Claim;
use crate::error::IdentityError;
use crate::identity::Identity;

/// `typ` of the JWS header, so an assertion can't be confused with another JWT signed by the same key.
pub const ASSERTION_TYP: &str = "hero-assertion+jwt";
/// `iss` of every assertion.
pub const ASSERTION_ISSUER: &str = "hero_proxy";
/// Longest assertion accepted (bounded parsing work for untrusted input).
pub const MAX_ASSERTION_LEN: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
struct JwsHeader {
    alg: String,
    typ: String,
    kid: String,
}

/// Payload of the assertion. Field names are short because it travels on every request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssertionPayload {
    /// Always [`ASSERTION_ISSUER`].
    pub iss: String,
    /// Audience: the id of the proxy route the assertion was made for (checked by [`AssertionVerifier`]).
    #[serde(default)]
    pub aud: String,
    /// Local username.
    pub sub: String,
    /// The signed-in user's context id as a decimal string (`"42"`), if one is set; never the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<String>,
    /// Claims, sorted.
    pub claims: Vec<Claim>,
    /// Provider id.
    pub prv: String,
    /// The login at the provider (the Forge username, as Forge spells it). Empty from a proxy older than this
    /// field, which then matches no allowlist of logins.
    #[serde(default)]
    pub lgn: String,
    /// Provider subject (external id).
    pub xid: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expiry, unix seconds.
    pub exp: u64,
}

fn kid_for(key: &VerifyingKey) -> String {
    // First 16 characters of the base64url public key: stable, unique enough to pick among a handful of keys.
    B64.encode(key.as_bytes()).chars().take(16).collect()
}

/// Held by the proxy only.
pub struct AssertionSigner {
    key: SigningKey,
    kid: String,
}

impl AssertionSigner {
    /// From a 32-byte secret seed (the proxy keeps it in its secret store).
    pub fn from_seed(seed: &[u8; 32]) -> AssertionSigner {
        let key = SigningKey::from_bytes(seed);
        let kid = kid_for(&key.verifying_key());
        AssertionSigner { key, kid }
    }

    /// Key id carried in the JWS header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, as a JWKS document (what the proxy serves at [`crate::PROXY_KEY_PATH`]).
    pub fn public_jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [ {
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": B64.encode(self.key.verifying_key().as_bytes()),
        } ] })
    }

    /// A verifier for this signer's key and `audience` (tests, and a proxy verifying its own output). The audience
    /// is checked like [`AssertionVerifier::from_jwks_json`]'s: an empty one would accept assertions with no `aud`.
    pub fn verifier(&self, audience: &str) -> Result<AssertionVerifier, IdentityError> {
        Ok(AssertionVerifier {
            keys: vec![(self.kid.clone(), self.key.verifying_key())],
            audience: check_audience(audience)?,
        })
    }

    /// Signs `payload` into a compact JWS.
    pub fn sign(&self, payload: &AssertionPayload) -> String {
        let header = JwsHeader {
            alg: "EdDSA".into(),
            typ: ASSERTION_TYP.into(),
            kid: self.kid.clone(),
        };
        // Serialising these plain structs cannot fail; fall back to empty objects rather than panicking.
        let h = serde_json::to_vec(&header).unwrap_or_default();
        let p = serde_json::to_vec(payload).unwrap_or_default();
        let mut out = format!("{}.{}", B64.encode(h), B64.encode(p));
        let sig = self.key.sign(out.as_bytes());
        out.push('.');
        out.push_str(&B64.encode(sig.to_bytes()));
        out
    }
}

/// How far the proxy's clock and a backend's may disagree. The proxy re-signs an assertion once less than a fifth
/// of its 5-minute lifetime is left, so without leeway a backend whose clock runs a minute ahead refuses
/// assertions the proxy still considers fresh.
pub const CLOCK_LEEWAY_SECS: u64 = 60;

/// The longest lifetime (`exp - iat`) accepted. The proxy signs for 5 minutes; a longer-lived assertion is not
/// the proxy's (a leaked key, a bug) and would be a replayable identity for as long as it says.
pub const MAX_LIFETIME_SECS: u64 = 3600;

/// The time rules, in one place: issued no later than now (within the leeway), unexpired (within the leeway),
/// and valid for no longer than [`MAX_LIFETIME_SECS`].
fn check_times(p: &AssertionPayload, now: u64) -> Result<(), IdentityError> {
    if p.iat > now.saturating_add(CLOCK_LEEWAY_SECS) {
        return Err(IdentityError::Malformed("issued in the future"));
    }
    if p.exp < p.iat || p.exp - p.iat > MAX_LIFETIME_SECS {
        return Err(IdentityError::Malformed("lifetime longer than an hour"));
    }
    if p.exp.saturating_add(CLOCK_LEEWAY_SECS) <= now {
        return Err(IdentityError::Expired);
    }
    Ok(())
}

/// Held by backends: the proxy's public key(s) and the one audience (route id) this backend accepts.
#[derive(Clone, Debug)]
pub struct AssertionVerifier {
    keys: Vec<(String, VerifyingKey)>,
    audience: String,
}

fn check_audience(audience: &str) -> Result<String, IdentityError> {
    let a = audience.trim();
    if a.is_empty() {
        return Err(IdentityError::InvalidKey(
            "the audience (the proxy route's id) is empty",
        ));
    }
    Ok(a.to_owned())
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: String,
    x: String,
}

impl AssertionVerifier {
    /// Parses either a JWKS (`{"keys":[...]}`, what the proxy publishes) or a single JWK; only assertions made for
    /// `audience` (the id of the proxy route in front of this backend) will verify.
    pub fn from_jwks_json(text: &str, audience: &str) -> Result<AssertionVerifier, IdentityError> {
        let audience = check_audience(audience)?;
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|_| IdentityError::InvalidKey("not JSON"))?;
        let list = match v.get("keys") {
            Some(serde_json::Value::Array(a)) => a.clone(),
            _ => vec![v],
        };
        let mut keys = Vec::new();
        for item in list {
            let jwk: Jwk =
                serde_json::from_value(item).map_err(|_| IdentityError::InvalidKey("not a JWK"))?;
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                continue;
            }
            keys.push(Self::decode_key(&jwk.x)?);
        }
        if keys.is_empty() {
            return Err(IdentityError::InvalidKey("no Ed25519 key"));
        }
        Ok(AssertionVerifier { keys, audience })
    }

    /// From the base64url-encoded 32-byte public key (the JWK `x` value), for `audience`.
    pub fn from_public_key_base64url(
        x: &str,
        audience: &str,
    ) -> Result<AssertionVerifier, IdentityError> {
        Ok(AssertionVerifier {
            keys: vec![Self::decode_key(x)?],
            audience: check_audience(audience)?,
        })
    }

    /// The audience this verifier accepts.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    fn decode_key(x: &str) -> Result<(String, VerifyingKey), IdentityError> {
        let raw = B64
            .decode(x.trim())
            .map_err(|_| IdentityError::InvalidKey("x is not base64url"))?;
        let arr: [u8; 32] = raw
            .try_into()
            .map_err(|_| IdentityError::InvalidKey("x is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&arr)
            .map_err(|_| IdentityError::InvalidKey("not an Ed25519 point"))?;
        Ok((kid_for(&key), key))
    }

    /// Verifies signature, issuer, times ([`check_times`]) and audience (`now` = unix seconds, a parameter so
    /// tests control time).
    pub fn verify(&self, token: &str, now: u64) -> Result<AssertionPayload, IdentityError> {
        if token.len() > MAX_ASSERTION_LEN {
            return Err(IdentityError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::Malformed("not three dot-separated parts"));
        };
        let header: JwsHeader = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(IdentityError::Malformed("header"))?;
        if header.alg != "EdDSA" || header.typ != ASSERTION_TYP {
            return Err(IdentityError::Malformed("unexpected alg or typ"));
        }
        let key = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == header.kid)
            .map(|(_, k)| k)
            .ok_or(IdentityError::UnknownKey)?;
        let sig_bytes = B64
            .decode(s)
            .map_err(|_| IdentityError::Malformed("signature encoding"))?;
        let sig = Signature::from_slice(&sig_bytes)
            .map_err(|_| IdentityError::Malformed("signature length"))?;
        let signed_len = h.len() + 1 + p.len();
        let signed = token
            .get(..signed_len)
            .ok_or(IdentityError::Malformed("length"))?;
        key.verify(signed.as_bytes(), &sig)
            .map_err(|_| IdentityError::BadSignature)?;
        let payload: AssertionPayload = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(IdentityError::Malformed("payload"))?;
        if payload.iss != ASSERTION_ISSUER {
            return Err(IdentityError::Malformed("issuer"));
        }
        check_times(&payload, now)?;
        if !crate::identity::is_local_username(&payload.sub) {
            return Err(IdentityError::Malformed("sub is not a local username"));
        }
        if payload.aud != self.audience {
            return Err(IdentityError::WrongAudience);
        }
        Ok(payload)
    }

    /// Verifies and converts to an [`Identity`].
    pub fn verify_identity(&self, token: &str, now: u64) -> Result<Identity, IdentityError> {
        let p = self.verify(token, now)?;
        Ok(Identity {
            user: p.sub,
            context: p.ctx,
            claims: p.claims,
            provider: p.prv,
            login: p.lgn,
            external_id: p.xid,
            expires_at: Some(p.exp),
            verified: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(exp: u64) -> AssertionPayload {
        AssertionPayload {
            iss: ASSERTION_ISSUER.into(),
            aud: "cockpit".into(),
            sub: "alice".into(),
            ctx: Some("cockpit".into()),
            claims: vec![Claim::parse("users.alice").unwrap()],
            prv: "forge".into(),
            lgn: "Alice".into(),
            xid: "1001".into(),
            iat: 100,
            exp,
        }
    }

    #[test]
    fn sign_verify_round_trip_and_tamper() {
        let s = AssertionSigner::from_seed(&[7u8; 32]);
        let v = AssertionVerifier::from_jwks_json(&s.public_jwks().to_string(), "cockpit").unwrap();
        let tok = s.sign(&payload(200));
        assert_eq!(v.verify(&tok, 150).unwrap(), payload(200));
        // Expiry with the clock leeway: still valid just inside it, expired at its end.
        assert!(v.verify(&tok, 200 + CLOCK_LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            v.verify(&tok, 200 + CLOCK_LEEWAY_SECS),
            Err(IdentityError::Expired)
        );
        // Tampered payload: swap in a different user, keep the signature.
        let mut parts: Vec<String> = tok.split('.').map(String::from).collect();
        let mut other = payload(200);
        other.sub = "mallory".into();
        parts[1] = B64.encode(serde_json::to_vec(&other).unwrap());
        assert_eq!(
            v.verify(&parts.join("."), 150),
            Err(IdentityError::BadSignature)
        );
        // Another key.
        let s2 = AssertionSigner::from_seed(&[8u8; 32]);
        assert_eq!(
            v.verify(&s2.sign(&payload(200)), 150),
            Err(IdentityError::UnknownKey)
        );
        assert!(matches!(
            v.verify("a.b", 0),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn an_assertion_verifies_only_for_its_audience() {
        let s = AssertionSigner::from_seed(&[7u8; 32]);
        let jwks = s.public_jwks().to_string();
        let tok = s.sign(&payload(200));
        for (aud, ok) in [
            ("cockpit", true),
            (" cockpit ", true),
            ("admin", false),
            ("Cockpit", false),
            ("cockpit/", false),
            ("*/cockpit", false),
        ] {
            let v = AssertionVerifier::from_jwks_json(&jwks, aud).unwrap();
            assert_eq!(v.verify(&tok, 150).is_ok(), ok, "{aud:?}");
            if !ok {
                assert_eq!(v.verify(&tok, 150), Err(IdentityError::WrongAudience));
            }
        }
        // An assertion without `aud` (an older proxy) verifies nowhere.
        let mut old = payload(200);
        old.aud = String::new();
        let v = AssertionVerifier::from_jwks_json(&jwks, "cockpit").unwrap();
        assert_eq!(
            v.verify(&s.sign(&old), 150),
            Err(IdentityError::WrongAudience)
        );
        for empty in ["", "  "] {
            assert!(AssertionVerifier::from_jwks_json(&jwks, empty).is_err());
            assert!(
                s.verifier(empty).is_err(),
                "the signer's verifier checks it too"
            );
        }
    }

    #[test]
    fn sub_must_be_a_local_username() {
        let s = AssertionSigner::from_seed(&[7u8; 32]);
        let v = s.verifier("cockpit").unwrap();
        for (sub, ok) in [
            ("alice", true),
            ("alice-2", true),
            ("a_b-c9", true),
            ("9lives", true),
            ("", false),
            ("Alice", false),
            ("-alice", false),
            ("alice\n", false),
            ("al ice", false),
            ("аlice", false), // Cyrillic а
            ("alice.smith", false),
        ] {
            let mut p = payload(200);
            p.sub = sub.into();
            assert_eq!(v.verify(&s.sign(&p), 150).is_ok(), ok, "{sub:?}");
        }
        let mut p = payload(200);
        p.sub = "a".repeat(65);
        assert!(v.verify(&s.sign(&p), 150).is_err());
    }

    /// Issued in the future (beyond the leeway), living longer than an hour, or ending before it starts: not an
    /// assertion the proxy makes, whatever its signature.
    #[test]
    fn the_time_window_is_checked() {
        let s = AssertionSigner::from_seed(&[7u8; 32]);
        let v = s.verifier("cockpit").unwrap();
        let now = 10_000;
        let at = |iat: u64, exp: u64| {
            let mut p = payload(exp);
            p.iat = iat;
            v.verify(&s.sign(&p), now)
        };
        assert!(at(now, now + 300).is_ok());
        assert!(
            at(now + CLOCK_LEEWAY_SECS, now + 300).is_ok(),
            "a proxy clock a minute ahead"
        );
        for (iat, exp) in [
            (now + CLOCK_LEEWAY_SECS + 1, now + 300),
            (4_102_444_800, 4_133_980_800),
            (now, now + MAX_LIFETIME_SECS + 1),
            (0, u64::MAX),
            (now, now - 1),
        ] {
            assert!(
                matches!(at(iat, exp), Err(IdentityError::Malformed(_))),
                "iat {iat} exp {exp}: {:?}",
                at(iat, exp)
            );
        }
    }
}
