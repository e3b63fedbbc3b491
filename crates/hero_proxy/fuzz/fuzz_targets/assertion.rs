//! Assertion verification on arbitrary input never panics and never accepts a token it did not sign.
#![no_main]

use hero_identity::AssertionSigner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let v = AssertionSigner::from_seed(&[3u8; 32])
        .verifier("fuzz")
        .expect("a non-empty audience");
    assert!(v.verify(s, 0).is_err());
});
