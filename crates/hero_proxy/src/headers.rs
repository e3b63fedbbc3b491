//! Inbound header hygiene, in the order that makes spoofing impossible:
//! 1. drop hop-by-hop headers, including every name listed in `Connection:` (RFC 9110 §7.6.1);
//! 2. drop every header reserved for the proxy (`hero_identity::is_reserved_header`: lower-case, `_`→`-`,
//!    prefix `x-hero-`), whatever its spelling or multiplicity;
//! 3. replace `X-Forwarded-*`/`Forwarded` unless the TCP peer is a trusted proxy;
//! 4. remove the proxy's own session cookie so backends never see session ids;
//! 5. only then inject the identity headers (`inject_identity`).

use std::net::IpAddr;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, COOKIE, SET_COOKIE, UPGRADE,
};

use crate::session::SESSION_COOKIE;

/// Hop-by-hop headers that never cross the proxy (besides those named in `Connection`). `HeaderName`s, not
/// `&str`s: removing by a string name parses and classifies it again on every request. A `static`, not a `const`:
/// a `const` array is built anew wherever it is used.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    UPGRADE,
    http::header::PROXY_AUTHORIZATION,
    HeaderName::from_static("http2-settings"),
];

/// The one protocol a client may switch to through the proxy.
///
/// Why an allow-list: after a `101` the proxy only pipes bytes, so whatever protocol runs inside the tunnel is
/// beyond routing, policy and header stripping. WebSocket frames carry no requests, so a WebSocket tunnel stays
/// bound to the one request that was checked. An `h2c` tunnel (or any other protocol) would carry new requests,
/// with client-chosen paths and `x-hero-*` headers, straight to the backend. So only a single `websocket` token
/// (case-insensitive, as RFC 6455 says) is let through; anything else is forwarded as a plain request without
/// `Upgrade`, which is what nginx does by default.
pub const ALLOWED_UPGRADE: &str = "websocket";

/// The `Sec-WebSocket-Accept` a WebSocket server answers to the client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64 of the SHA-1 of the key and the protocol's GUID.
///
/// Why the proxy checks a `101` against it: a backend that switches on the `Upgrade` header alone, without
/// running the handshake (a generic upgrade handler), may go on reading HTTP from the tunnel, which would then
/// carry requests with client-chosen paths and `x-hero-*` headers past routing, policy and header stripping, as
/// an `h2c` tunnel would. Only a server that computed this value has spoken WebSocket.
pub fn websocket_accept(key: &HeaderValue) -> Option<HeaderValue> {
    use base64::Engine as _;
    use sha1::Digest as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    // Base64 is always a valid header value; were it not, no answer would match (never an empty one).
    HeaderValue::from_str(&accept).ok()
}

/// True if `v` is exactly one `Upgrade` token equal to [`ALLOWED_UPGRADE`] (no list, no version suffix).
pub fn is_allowed_upgrade(v: &HeaderValue) -> bool {
    v.to_str()
        .is_ok_and(|s| s.trim().eq_ignore_ascii_case(ALLOWED_UPGRADE))
}

/// Removes hop-by-hop headers. Returns the `Upgrade` value if this is an upgrade to an allowed protocol (see
/// [`ALLOWED_UPGRADE`]: one `Upgrade` header, `websocket`), which the caller re-adds to the upstream request
/// together with `Connection: upgrade`; any other upgrade is dropped with the other hop-by-hop headers.
pub fn remove_hop_by_hop(h: &mut HeaderMap) -> Option<HeaderValue> {
    // One pass over the names present instead of a hashed removal per hop-by-hop name: most messages carry
    // none of them, or only `Connection: keep-alive`. Without `Connection` (itself in the list) nothing else
    // is named for removal, so an empty `present` means there is nothing to do.
    let present: Vec<HeaderName> = h
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if present.is_empty() {
        return None;
    }
    let mut listed: Vec<HeaderName> = Vec::new();
    let mut wants_upgrade = false;
    for v in h.get_all(CONNECTION) {
        if let Ok(s) = v.to_str() {
            for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                // `from_bytes` lower-cases; `keep-alive` (nearly every request's only token) is removed below anyway.
                match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(n) if n == UPGRADE => wants_upgrade = true,
                    Ok(n) if !HOP_BY_HOP.contains(&n) => listed.push(n),
                    _ => {}
                }
            }
        }
    }
    let mut offered = h.get_all(UPGRADE).iter();
    let upgrade = match (wants_upgrade, offered.next(), offered.next()) {
        (true, Some(v), None) if is_allowed_upgrade(v) => Some(v.clone()),
        _ => None,
    };
    for name in listed.iter().chain(present.iter()) {
        h.remove(name);
    }
    upgrade
}

/// Request headers some frameworks (IIS URL Rewrite, Symfony, Zend, some Java filters) take as the real request
/// path or host over the request line: a client could pick the path the backend serves after the proxy matched
/// its route on another. No backend here needs them, so they never cross, in any spelling.
const PATH_OVERRIDES: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-original-uri"];

/// Removes every header reserved for the proxy, in any spelling, and the path overrides ([`PATH_OVERRIDES`]).
pub fn strip_reserved(h: &mut HeaderMap) {
    let reserved: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            let k = k.as_str();
            hero_identity::is_reserved_header(k)
                || PATH_OVERRIDES.iter().any(|o| {
                    // `HeaderName` is lower case already; `_` is how some servers spell `-`.
                    o.len() == k.len()
                        && o.bytes()
                            .zip(k.bytes())
                            .all(|(o, k)| o == k || (o == b'-' && k == b'_'))
                })
        })
        .cloned()
        .collect();
    for k in reserved {
        h.remove(k);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A client's address and its `X-Forwarded-For` spelling, formatted once per connection instead of per request.
#[derive(Clone, Debug)]
pub struct PeerAddr {
    /// The TCP peer.
    pub ip: IpAddr,
    value: Option<HeaderValue>,
}

impl PeerAddr {
    /// `ip` with its header value.
    pub fn new(ip: IpAddr) -> PeerAddr {
        let value = HeaderValue::from_str(&ip.to_string()).ok();
        PeerAddr { ip, value }
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host`. Client-sent values (and `Forwarded`) survive only from a trusted peer, in
/// which case the peer is appended to `X-Forwarded-For`.
pub fn set_forwarded(
    h: &mut HeaderMap,
    peer: &PeerAddr,
    trusted: &[IpAddr],
    scheme: &str,
    host: Option<&str>,
) {
    let is_trusted = trusted.contains(&peer.ip);
    let prior_for = if is_trusted {
        h.get(X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    } else {
        None
    };
    let prior_proto = if is_trusted {
        h.get(X_FORWARDED_PROTO).cloned()
    } else {
        None
    };
    let prior_host = if is_trusted {
        h.get(X_FORWARDED_HOST).cloned()
    } else {
        None
    };
    if !is_trusted {
        let names: Vec<HeaderName> = h
            .keys()
            .filter(|k| is_forwarding_header(k.as_str()))
            .cloned()
            .collect();
        for n in names {
            h.remove(n);
        }
    }
    let xff = match prior_for {
        Some(p) => HeaderValue::from_str(&format!("{p}, {}", peer.ip)).ok(),
        None => peer.value.clone(),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    match prior_proto {
        Some(p) => h.insert(X_FORWARDED_PROTO, p),
        None => h.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_str(scheme).unwrap_or(HeaderValue::from_static("https")),
        ),
    };
    match (prior_host, host.and_then(|s| HeaderValue::from_str(s).ok())) {
        (Some(p), _) => {
            h.insert(X_FORWARDED_HOST, p);
        }
        (None, Some(v)) => {
            h.insert(X_FORWARDED_HOST, v);
        }
        (None, None) => {}
    }
}

/// `x-forwarded-*`, `forwarded` or `x-real-ip`, with `_` read as `-` (names arrive lower-cased from hyper).
fn is_forwarding_header(name: &str) -> bool {
    let norm = |b: u8| if b == b'_' { b'-' } else { b };
    let eq = |a: &str, b: &str| {
        a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == y)
    };
    let starts = |a: &str, p: &str| {
        a.len() >= p.len() && a.bytes().zip(p.bytes()).all(|(x, y)| norm(x) == y)
    };
    starts(name, "x-forwarded-") || eq(name, "forwarded") || eq(name, "x-real-ip")
}

/// The proxy's own cookies: backends never see them and can never set them.
pub const PROXY_COOKIES: [&str; 2] = [SESSION_COOKIE, LOGIN_COOKIE];

/// Cookie binding a login attempt to the browser that started it (login-CSRF defence).
pub const LOGIN_COOKIE: &str = "__Host-hero_login";

fn is_proxy_cookie(name: &str) -> bool {
    let name = name.trim();
    PROXY_COOKIES.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// What of an upstream's response head reaches the browser — every response, a `101 Switching Protocols`
/// included: one function, run before the handler looks at the status, because the 101 path once returned early
/// and let a backend's `Set-Cookie: __Host-hero_session=…` through on a WebSocket handshake (browsers store
/// cookies from it). Removes the hop-by-hop headers, the `Set-Cookie` lines for the proxy's own cookies and a
/// `Clear-Site-Data` that would clear cookies. Returns the `Upgrade` value when the response names an allowed
/// upgrade the way [`remove_hop_by_hop`] accepts one (`Connection: upgrade`, one `Upgrade: websocket`); the
/// caller re-adds it, with `Connection: upgrade`, only to a 101 it agreed to.
pub fn sanitize_response(h: &mut HeaderMap) -> Option<HeaderValue> {
    // First: it looks at `Transfer-Encoding`, which goes with the hop-by-hop headers next.
    one_content_length(h);
    let upgrade = remove_hop_by_hop(h);
    remove_proxy_set_cookies(h);
    remove_cookie_clearing(h);
    upgrade
}

/// The `Content-Length` the client gets: none, or one value that frames the body it is sent.
/// * Beside `Transfer-Encoding`, none. RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and a proxy
///   must remove the latter — the client gets the decoded body, re-framed, and the upstream's length would cut it
///   short.
/// * A list (`5, 5`) or repeated values become one. RFC 9110 §8.6: a recipient may accept a list of equal
///   values, but a proxy forwarding such a message must send a single value — a client or cache downstream may
///   read the list another way. The body was framed by these values already (unequal ones were refused,
///   `lean::framing`; hyper's client does the same); values that are not one number (on a HEAD, 204 or 304
///   answer, whose length frames nothing) lose the header.
fn one_content_length(h: &mut HeaderMap) {
    if h.contains_key(http::header::TRANSFER_ENCODING) {
        h.remove(CONTENT_LENGTH);
        return;
    }
    let mut all = h.get_all(CONTENT_LENGTH).iter();
    match (all.next(), all.next()) {
        (None, _) => return,
        (Some(v), None)
            if !v.as_bytes().is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit) =>
        {
            return
        }
        _ => {}
    }
    let mut values = h
        .get_all(CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|part| {
            std::str::from_utf8(part)
                .ok()
                .and_then(|p| p.trim().parse::<u64>().ok())
        });
    let first = values.next().flatten();
    let one = first.filter(|n| values.all(|v| v == Some(*n)));
    h.remove(CONTENT_LENGTH);
    if let Some(n) = one {
        h.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// Whether a `Set-Cookie` value sets one of [`PROXY_COOKIES`]. A nameless cookie (`=__Host-hero_session=x`,
/// RFC 6265bis §5.6) counts by its value: browsers send it back as the bare value, which reads as that cookie.
fn sets_proxy_cookie(v: &HeaderValue) -> bool {
    let s = String::from_utf8_lossy(v.as_bytes());
    let pair = s.split(';').next().unwrap_or("");
    let (name, value) = pair.split_once('=').unwrap_or(("", pair));
    let name = if name.trim().is_empty() {
        value.split('=').next().unwrap_or("")
    } else {
        name
    };
    is_proxy_cookie(name)
}

/// Removes `Set-Cookie` lines that set one of [`PROXY_COOKIES`] (see [`sets_proxy_cookie`]): a backend (or
/// whoever controls one) must not be able to plant or clear a session or a login binding in the person's browser.
pub fn remove_proxy_set_cookies(h: &mut HeaderMap) {
    if !h.contains_key(SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = h
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| !sets_proxy_cookie(v))
        .cloned()
        .collect();
    h.remove(SET_COOKIE);
    for v in kept {
        h.append(SET_COOKIE, v);
    }
}

/// Drops a `Clear-Site-Data` header that clears cookies (`"cookies"` or `"*"`, in any case): it would sign the
/// person out of the proxy, which only the proxy's own logout may do. Other types (`"cache"`, `"storage"`) pass.
fn remove_cookie_clearing(h: &mut HeaderMap) {
    let clears = h.get_all(CLEAR_SITE_DATA).iter().any(|v| {
        let s = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
        s.contains("cookies") || s.contains('*')
    });
    if clears {
        h.remove(CLEAR_SITE_DATA);
    }
}

/// `Clear-Site-Data` (W3C Clear Site Data); `http` has no constant for it.
const CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");

/// Removes the proxy's cookies ([`PROXY_COOKIES`]) from `Cookie` headers, keeping the others.
pub fn remove_session_cookie(h: &mut HeaderMap) {
    let values: Vec<HeaderValue> = h.get_all(COOKIE).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    h.remove(COOKIE);
    let mut kept: Vec<String> = Vec::new();
    for v in values {
        if let Ok(s) = v.to_str() {
            kept.extend(
                s.split(';')
                    .map(str::trim)
                    .filter(|c| {
                        !c.is_empty() && !is_proxy_cookie(c.split('=').next().unwrap_or(""))
                    })
                    .map(str::to_owned),
            );
        }
    }
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            h.insert(COOKIE, v);
        }
    }
}

/// Reads one cookie from the request.
pub fn get_cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_listed_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("a", "b"),
        ]);
        assert!(remove_hop_by_hop(&mut h).is_none());
        assert_eq!(h.len(), 1);
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(remove_hop_by_hop(&mut h).unwrap(), "websocket");
        assert!(h.is_empty());
        for refused in [
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AA"),
            ][..],
            &[("connection", "upgrade"), ("upgrade", "websocket, h2c")],
            &[("connection", "upgrade"), ("upgrade", "h2c, websocket")],
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("upgrade", "h2c"),
            ],
            &[("connection", "upgrade"), ("upgrade", "TLS/1.0")],
            &[("upgrade", "websocket")],
        ] {
            let mut h = map(refused);
            assert!(remove_hop_by_hop(&mut h).is_none(), "{refused:?}");
            assert!(h.is_empty(), "{refused:?}");
        }
    }

    #[test]
    fn reserved_are_stripped_in_every_spelling() {
        let mut h = map(&[
            ("X-Hero-User", "a"),
            ("x-hero-user", "b"),
            ("X_Hero_User", "c"),
            ("X-HERO-CLAIMS", "admin"),
            ("x-hero-whatever", "d"),
            ("x-heroic", "kept"),
            ("X-Original-URL", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x_original_uri", "/admin"),
        ]);
        strip_reserved(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-heroic"));
    }

    #[test]
    fn forwarded_only_from_trusted() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x_forwarded_host", "evil"),
        ]);
        set_forwarded(&mut h, &PeerAddr::new(peer), &[], "https", Some("edge"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-host"], "edge");
        assert!(!h.contains_key("forwarded"));
        assert!(!h.contains_key("x_forwarded_host"));
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "http"),
        ]);
        set_forwarded(&mut h, &PeerAddr::new(peer), &[peer], "https", Some("edge"));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn proxy_cookies_cross_in_neither_direction() {
        let mut h = map(&[
            ("set-cookie", "__Host-hero_session=planted; Path=/; Secure"),
            ("set-cookie", "__host-hero_login=x"),
            ("set-cookie", " __Host-hero_session =y"),
            ("set-cookie", "app=1; Path=/"),
        ]);
        remove_proxy_set_cookies(&mut h);
        assert_eq!(h.get_all(SET_COOKIE).iter().count(), 1);
        assert_eq!(h[SET_COOKIE], "app=1; Path=/");
        // Nameless cookies count by their value; a proxy cookie's name inside another's value does not.
        let mut h = map(&[
            ("set-cookie", "=__Host-hero_session=NAMELESS; Path=/"),
            ("set-cookie", " = __host-hero_login=x"),
            ("set-cookie", "__Host-hero_session"),
            ("set-cookie", "note=__Host-hero_session=quoted"),
            ("set-cookie", "=plain"),
        ]);
        remove_proxy_set_cookies(&mut h);
        let kept: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(kept, ["note=__Host-hero_session=quoted", "=plain"]);
        let mut h = map(&[("cookie", "__Host-hero_login=STATE; a=1")]);
        remove_session_cookie(&mut h);
        assert_eq!(h[COOKIE], "a=1");
    }

    #[test]
    fn every_response_head_is_sanitized_the_same_way_101_included() {
        // (name, headers in, Upgrade returned, headers out)
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
            &'static [(&'static str, &'static str)],
        );
        let cases: &[Case] = &[
            (
                "101 with proxy cookies",
                &[
                    ("upgrade", "websocket"),
                    ("connection", "Upgrade"),
                    ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                    ("set-cookie", "__Host-hero_session=PLANTED; Path=/; Secure"),
                    ("set-cookie", "__Host-hero_login=PLANTED"),
                    ("set-cookie", "app=1"),
                ],
                Some("websocket"),
                &[
                    ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                    ("set-cookie", "app=1"),
                ],
            ),
            (
                "101 to another protocol",
                &[("upgrade", "h2c"), ("connection", "Upgrade")],
                None,
                &[],
            ),
            (
                "Connection-nominated and clearing headers",
                &[
                    ("connection", "x-secret, keep-alive"),
                    ("x-secret", "1"),
                    ("keep-alive", "timeout=5"),
                    ("clear-site-data", "\"cache\", \"Cookies\""),
                    ("content-type", "text/plain"),
                ],
                None,
                &[("content-type", "text/plain")],
            ),
            (
                "Clear-Site-Data: *",
                &[("clear-site-data", "\"*\"")],
                None,
                &[],
            ),
            (
                "Clear-Site-Data without cookies",
                &[("clear-site-data", "\"cache\", \"storage\"")],
                None,
                &[("clear-site-data", "\"cache\", \"storage\"")],
            ),
        ];
        for (name, input, upgrade, out) in cases {
            let mut h = map(input);
            let got = sanitize_response(&mut h);
            assert_eq!(
                got.as_ref().map(|v| v.to_str().unwrap()),
                *upgrade,
                "{name}"
            );
            let left: Vec<(String, String)> = h
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            let want: Vec<(String, String)> = out
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(left, want, "{name}");
        }
    }

    #[test]
    fn session_cookie_is_not_forwarded() {
        let mut h = map(&[
            ("cookie", "a=1; __Host-hero_session=SECRET; b=2"),
            ("cookie", "__Host-hero_session=X"),
        ]);
        assert_eq!(get_cookie(&h, SESSION_COOKIE), Some("SECRET"));
        remove_session_cookie(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h[COOKIE], "a=1; b=2");
    }

    #[test]
    fn websocket_accept_is_rfc_6455s() {
        // RFC 6455 §1.3's example.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            websocket_accept(&key).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
