//! Property tests for the claim grammar: the parser agrees with an independent reading of the grammar.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hero_identity::{Claim, ClaimRule, MAX_CLAIM_LEN, MAX_CLAIM_SEGMENTS};
use proptest::prelude::*;

/// Independent oracle: the grammar written out with plain iterators.
fn oracle(s: &str) -> bool {
    if s.len() > MAX_CLAIM_LEN {
        return false;
    }
    let segs: Vec<&str> = s.split('.').collect();
    segs.len() <= MAX_CLAIM_SEGMENTS
        && segs.iter().all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        })
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}"
}

proptest! {
    #[test]
    fn valid_claims_parse(segs in prop::collection::vec(segment(), 1..=8)) {
        let s = segs.join(".");
        prop_assert_eq!(Claim::parse(&s).is_ok(), s.len() <= 255);
    }

    #[test]
    fn nine_segments_never_parse(segs in prop::collection::vec("[a-z]{1,3}", 9..20)) {
        prop_assert!(Claim::parse(&segs.join(".")).is_err());
    }

    #[test]
    fn parser_matches_oracle(s in "[a-zA-Z0-9_.*, é-]{0,80}") {
        prop_assert_eq!(Claim::parse(&s).is_ok(), oracle(&s));
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = Claim::parse(&s);
        let _ = ClaimRule::parse(&s);
    }

    #[test]
    fn prefix_rule_matches_exactly_descendants(a in segment(), b in segment(), c in segment()) {
        let rule = ClaimRule::parse(&format!("{a}.*")).unwrap();
        let child = format!("{a}.{b}");
        let sibling = format!("{a}{b}.{c}");
        let grandchild = format!("{a}.{b}.{c}");
        prop_assert!(rule.matches_str(&child));
        prop_assert!(rule.matches_str(&grandchild));
        prop_assert!(!rule.matches_str(&a));
        prop_assert!(!rule.matches_str(&sibling));
    }
}
