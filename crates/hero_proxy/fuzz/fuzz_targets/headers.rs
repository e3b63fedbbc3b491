//! Header hygiene on arbitrary header sets: after `remove_hop_by_hop` + `strip_reserved`, no header reserved for
//! the proxy and no header named in `Connection:` may remain, whatever the spelling or duplication.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut h = HeaderMap::new();
    let mut connection_listed: Vec<String> = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(pos) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..pos], &line[pos + 1..]);
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        if n == http::header::CONNECTION {
            if let Ok(s) = v.to_str() {
                connection_listed.extend(s.split(',').map(|x| x.trim().to_ascii_lowercase()));
            }
        }
        h.append(n, v);
    }
    let _ = hero_proxy::headers::remove_hop_by_hop(&mut h);
    hero_proxy::headers::strip_reserved(&mut h);
    for k in h.keys() {
        assert!(
            !hero_identity::is_reserved_header(k.as_str()),
            "reserved header survived: {k}"
        );
        assert!(
            !connection_listed.iter().any(|c| c == k.as_str()),
            "Connection-listed header survived: {k}"
        );
    }
    let rd = String::from_utf8_lossy(data);
    let safe = hero_proxy::login::safe_return_to(Some(&rd));
    assert!(safe.starts_with('/') && !safe.starts_with("//") && !safe.contains('\\'));
});
