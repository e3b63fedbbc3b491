//! Claim grammar on arbitrary text: never panics; anything accepted respects the length and segment limits and
//! round-trips through the `X-Hero-Claims` header format.
#![no_main]

use hero_identity::{format_claims_header, parse_claims_header, Claim, ClaimRule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(c) = Claim::parse(s) {
        assert!(c.as_str().len() <= 255);
        assert!(c.segments().count() <= 8);
        assert!(!c.as_str().contains('*'));
        assert_eq!(parse_claims_header(c.as_str()).ok(), Some(vec![c.clone()]));
    }
    if let Ok(r) = ClaimRule::parse(s) {
        assert_eq!(r.to_string(), s);
    }
    if let Ok(list) = parse_claims_header(s) {
        let again = parse_claims_header(&format_claims_header(&list)).unwrap_or_default();
        let mut sorted = list.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(again, sorted);
    }
});
