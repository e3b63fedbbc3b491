//! Request targets and Host values: `target::canonical_path` never panics, its output is a fixed point that starts
//! with `/` and has no dot-segment, empty segment, backslash or encoded separator left (so matching and forwarding
//! cannot disagree); `target::canonical_host` never panics and accepts no trailing dot, userinfo or escapes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (path, host) = s.split_once('\n').unwrap_or((s, ""));
    if let Ok(p) = hero_proxy::target::canonical_path(path) {
        assert!(p.starts_with('/'));
        assert_eq!(hero_proxy::target::canonical_path(&p).as_deref(), Ok(p.as_str()));
        for seg in p[1..].split('/').rev().skip(1) {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{p}");
        }
        let upper = p.to_ascii_uppercase();
        assert!(!p.contains('\\') && !upper.contains("%2F") && !upper.contains("%5C"), "{p}");
    }
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(host) {
        h.insert(http::header::HOST, v);
        let uri = http::Uri::from_static("/");
        if let Ok(Some(c)) = hero_proxy::target::canonical_host(&h, &uri, http::Version::HTTP_11) {
            let name = c.rsplit_once(':').map_or(c.as_str(), |(n, _)| n);
            assert!(!c.contains('@') && !c.contains('%') && !name.ends_with('.'), "{c}");
            assert_eq!(c, c.to_ascii_lowercase());
        }
    }
});
