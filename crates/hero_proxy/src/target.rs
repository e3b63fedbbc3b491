//! The request target, canonicalised once: the same string is used to pick the route (and so the policy) and is
//! what the upstream receives.
//!
//! Why: a proxy that matches on one spelling of a path and forwards another lets a request pass under a weaker
//! route's policy and reach a protected area of a backend that normalises (nginx, most frameworks do):
//! `/public/../admin`, `/%61dmin`, `//admin`, `/public/%2e%2e/admin` are all `/admin` to such a backend. So the
//! proxy applies RFC 3986 normalisation itself (§6.2.2: percent-encoded unreserved characters decoded, other
//! escapes upper-cased, dot-segments removed per §5.2.4; plus empty segments merged, as nginx's `merge_slashes`
//! does) and forwards the result. What has no single meaning is refused with 400 instead of guessed at:
//! escaped `/` or `\` (a backend may or may not split on it), a literal `\` (browsers read it as `/`), escaped or
//! literal control characters and NUL, `..` above the root, dot-segments carrying `;` parameters (`..;/` is `..`
//! to servlet containers), and any target that is not origin-form or absolute-form (`*`, authority-form).

use std::fmt;

/// Why a request target was refused (answered 400, with this as the explanation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not `/path` (or `http://host/path`): `*`, authority-form, empty.
    NotOriginForm,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: a separator in disguise.
    EncodedSeparator,
    /// A literal `\`.
    Backslash,
    /// A control character, NUL or non-ASCII byte, literal or escaped.
    ControlCharacter,
    /// `..` climbing above `/`.
    AboveRoot,
    /// `.;x` or `..;x`.
    DotSegmentParameters,
    /// HTTP/1.1 without `Host` (RFC 9112 §3.2).
    MissingHost,
    /// More than one `Host` header.
    DuplicateHost,
    /// `Host` is not `name[:port]`: trailing dot, empty label, userinfo, escapes, bad port, ...
    BadHost,
    /// Absolute-form target whose authority is not the `Host` header.
    HostMismatch,
    /// A path that reads as another route's without its `;parameters` or in another letter case
    /// (`Routes::find_unambiguous`).
    AmbiguousRoute,
}

impl TargetError {
    /// Stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            TargetError::NotOriginForm => "target.not_origin_form",
            TargetError::BadEscape => "target.bad_escape",
            TargetError::EncodedSeparator => "target.encoded_separator",
            TargetError::Backslash => "target.backslash",
            TargetError::ControlCharacter => "target.control_character",
            TargetError::AboveRoot => "target.above_root",
            TargetError::DotSegmentParameters => "target.dot_segment_parameters",
            TargetError::MissingHost => "target.missing_host",
            TargetError::DuplicateHost => "target.duplicate_host",
            TargetError::BadHost => "target.bad_host",
            TargetError::HostMismatch => "target.host_mismatch",
            TargetError::AmbiguousRoute => "target.ambiguous_route",
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetError::NotOriginForm => "the request target must be a path starting with '/'",
            TargetError::BadEscape => "the path has a '%' not followed by two hex digits",
            TargetError::EncodedSeparator => "the path has an encoded '/' or '\\'",
            TargetError::Backslash => "the path has a '\\'",
            TargetError::ControlCharacter => "the path has a control or non-ASCII character",
            TargetError::AboveRoot => "the path climbs above '/' with '..'",
            TargetError::DotSegmentParameters => {
                "the path has a '.' or '..' segment with ';' parameters"
            }
            TargetError::MissingHost => "the request has no Host header",
            TargetError::DuplicateHost => "the request has more than one Host header",
            TargetError::BadHost => "the Host header is not a host name with an optional port",
            TargetError::HostMismatch => {
                "the Host header differs from the host in the request target"
            }
            TargetError::AmbiguousRoute => {
                "the path could be read as another address (';' parameters or letter case); spell it exactly"
            }
        })
    }
}

impl std::error::Error for TargetError {}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A path with nothing to normalise: no escapes, no backslash, no empty or dot segment, no control byte.
/// The common case, answered without allocating.
fn already_canonical(p: &[u8]) -> bool {
    if p.first() != Some(&b'/') {
        return false;
    }
    let mut prev = 0u8;
    for (i, &b) in p.iter().enumerate() {
        if b == b'%' || b == b'\\' || b <= 0x20 || b >= 0x7f {
            return false;
        }
        if prev == b'/' && (b == b'/' || b == b'.') {
            return false;
        }
        // `;` right after a segment start or after dots is checked by the slow path.
        if b == b';' && i > 0 {
            return false;
        }
        prev = b;
    }
    true
}

/// Canonicalises a request path (without its query); see the module doc for the rules.
pub fn canonical_path(raw: &str) -> Result<String, TargetError> {
    let bytes = raw.as_bytes();
    if already_canonical(bytes) {
        return Ok(raw.to_owned());
    }
    if bytes.first() != Some(&b'/') {
        return Err(TargetError::NotOriginForm);
    }
    let mut out: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw_seg in raw[1..].split('/') {
        let seg = decode_segment(raw_seg)?;
        trailing_slash = false;
        match seg.as_str() {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if out.pop().is_none() {
                    return Err(TargetError::AboveRoot);
                }
                trailing_slash = true;
            }
            s => {
                let dots = s.len() - s.trim_start_matches('.').len();
                if (dots == 1 || dots == 2) && s[dots..].starts_with(';') {
                    return Err(TargetError::DotSegmentParameters);
                }
                out.push(seg);
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || trailing_slash {
        path.push('/');
    }
    Ok(path)
}

/// One segment: unreserved escapes decoded, other escapes upper-cased, separators and control bytes refused.
fn decode_segment(s: &str) -> Result<String, TargetError> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let v = match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => h * 16 + l,
                _ => return Err(TargetError::BadEscape),
            };
            if v == b'/' || v == b'\\' {
                return Err(TargetError::EncodedSeparator);
            }
            if v < 0x20 || v == 0x7f {
                return Err(TargetError::ControlCharacter);
            }
            if is_unreserved(v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(v >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(v & 15)]));
            }
            i += 3;
            continue;
        }
        if c == b'\\' {
            return Err(TargetError::Backslash);
        }
        if c <= 0x20 || c >= 0x7f {
            return Err(TargetError::ControlCharacter);
        }
        out.push(char::from(c));
        i += 1;
    }
    Ok(out)
}

/// The canonical path and the query (verbatim) of a request URI, joined as the upstream receives them.
pub fn canonical_path_and_query(uri: &http::Uri) -> Result<(String, String), TargetError> {
    let raw = uri.path();
    if raw.is_empty() || raw == "*" {
        return Err(TargetError::NotOriginForm);
    }
    let path = canonical_path(raw)?;
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    Ok((path, pq))
}

/// The request's host, canonical (lower-case, port kept), or `None` for an HTTP/1.0 request without one.
///
/// Why strict: routes are chosen by host, and a backend that dispatches on `Host` must see the host the route was
/// chosen for. `admin.local.` is `admin.local` to DNS and to nginx's `server_name`, but not to a string compare,
/// so it would pass under the any-host route and reach the admin virtual host; two `Host` headers or none leave
/// the proxy and the backend free to pick differently. So: exactly one `Host` on HTTP/1.1 (RFC 9112 §3.2), a
/// plain `name[:port]` or IP literal (no trailing dot, no empty label, no userinfo or escapes), and an
/// absolute-form target must name the same authority. Anything else is 400.
pub fn canonical_host(
    headers: &http::HeaderMap,
    uri: &http::Uri,
    version: http::Version,
) -> Result<Option<String>, TargetError> {
    let mut all = headers.get_all(http::header::HOST).iter();
    let header = match (all.next(), all.next()) {
        (Some(_), Some(_)) => return Err(TargetError::DuplicateHost),
        (Some(v), None) => Some(
            v.to_str()
                .map_err(|_| TargetError::BadHost)
                .and_then(canonical_authority)?,
        ),
        (None, _) => None,
    };
    let target = uri
        .authority()
        .map(|a| canonical_authority(a.as_str()))
        .transpose()?;
    match (header, target) {
        (Some(h), Some(t)) if h != t => Err(TargetError::HostMismatch),
        (Some(h), _) => Ok(Some(h)),
        (None, Some(t)) => Ok(Some(t)),
        (None, None) if version >= http::Version::HTTP_11 => Err(TargetError::MissingHost),
        (None, None) => Ok(None),
    }
}

/// `name[:port]`, `a.b.c.d[:port]` or `[v6][:port]`, lower-cased; see [`canonical_host`].
pub(crate) fn canonical_authority(s: &str) -> Result<String, TargetError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(TargetError::BadHost)?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| TargetError::BadHost)?;
        let host = format!("[{}]", v6.to_ascii_lowercase());
        return match after {
            "" => Ok(host),
            p => match p.strip_prefix(':') {
                Some(p) if port_ok(p) => Ok(format!("{host}:{p}")),
                _ => Err(TargetError::BadHost),
            },
        };
    }
    let (h, p) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if h.is_empty() || h.len() > 253 {
        return Err(TargetError::BadHost);
    }
    for label in h.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TargetError::BadHost);
        }
    }
    if !p.is_none_or(port_ok) {
        return Err(TargetError::BadHost);
    }
    // The name lower-cased and the port as it is, in one allocation (lower-casing leaves the digits alone).
    Ok(s.to_ascii_lowercase())
}

/// 1 to 5 digits that make a `u16`.
fn port_ok(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_spellings_become_one() {
        for (raw, want) in [
            ("/", "/"),
            ("/admin", "/admin"),
            ("/admin/", "/admin/"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin/x", "/admin/x"),
            ("/public/.%2e/admin", "/admin"),
            ("/./admin", "/admin"),
            ("/%2e/admin", "/admin"),
            ("//admin", "/admin"),
            ("///admin//x", "/admin/x"),
            ("/%61dmin", "/admin"),
            ("/%61%64%6D%69%6e/x", "/admin/x"),
            ("/a/b/../../admin", "/admin"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/a%7eb%2Dc", "/a~b-c"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%25b", "/a%25b"),
            ("/a;b", "/a;b"),
            ("/admin...", "/admin..."),
            ("/.well-known/x", "/.well-known/x"),
        ] {
            assert_eq!(canonical_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn ambiguous_targets_are_refused() {
        for (raw, want) in [
            ("*", TargetError::NotOriginForm),
            ("admin", TargetError::NotOriginForm),
            ("", TargetError::NotOriginForm),
            ("/admin%2Fx", TargetError::EncodedSeparator),
            ("/admin%2fx", TargetError::EncodedSeparator),
            ("/public%5C..%5Cadmin", TargetError::EncodedSeparator),
            ("/public\\..\\admin", TargetError::Backslash),
            ("/a%00b", TargetError::ControlCharacter),
            ("/a%0d%0ab", TargetError::ControlCharacter),
            ("/a%zz", TargetError::BadEscape),
            ("/a%4", TargetError::BadEscape),
            ("/..", TargetError::AboveRoot),
            ("/../admin", TargetError::AboveRoot),
            ("/a/../../admin", TargetError::AboveRoot),
            ("/public/..;/admin", TargetError::DotSegmentParameters),
            ("/public/.;x/admin", TargetError::DotSegmentParameters),
        ] {
            assert_eq!(canonical_path(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn hosts() {
        for (raw, want) in [
            ("admin.local", Some("admin.local")),
            ("ADMIN.Local:8080", Some("admin.local:8080")),
            ("127.0.0.1:80", Some("127.0.0.1:80")),
            ("[::1]:80", Some("[::1]:80")),
            ("[::1]", Some("[::1]")),
            ("admin.local.", None),
            ("admin.local.:80", None),
            (".admin.local", None),
            ("admin..local", None),
            ("", None),
            ("user@admin.local", None),
            ("admin%2elocal", None),
            ("admin.local:", None),
            ("admin.local:99999", None),
            ("admin.local:8o", None),
            ("admin.local:80:80", None),
            ("[::1", None),
            ("[zz::1]", None),
            ("a b", None),
        ] {
            match want {
                Some(w) => assert_eq!(canonical_authority(raw).as_deref(), Ok(w), "{raw:?}"),
                None => assert_eq!(
                    canonical_authority(raw),
                    Err(TargetError::BadHost),
                    "{raw:?}"
                ),
            }
        }
        let h = |pairs: &[&str]| {
            let mut m = http::HeaderMap::new();
            for v in pairs {
                m.append(http::header::HOST, v.parse().unwrap());
            }
            m
        };
        let origin: http::Uri = "/x".parse().unwrap();
        let v11 = http::Version::HTTP_11;
        assert_eq!(
            canonical_host(&h(&[]), &origin, v11),
            Err(TargetError::MissingHost)
        );
        assert_eq!(
            canonical_host(&h(&[]), &origin, http::Version::HTTP_10),
            Ok(None)
        );
        assert_eq!(
            canonical_host(&h(&["a", "a"]), &origin, v11),
            Err(TargetError::DuplicateHost)
        );
        let abs: http::Uri = "http://a.x/y".parse().unwrap();
        assert_eq!(
            canonical_host(&h(&["A.x"]), &abs, v11),
            Ok(Some("a.x".into()))
        );
        assert_eq!(
            canonical_host(&h(&["b.x"]), &abs, v11),
            Err(TargetError::HostMismatch)
        );
        assert_eq!(canonical_host(&h(&[]), &abs, v11), Ok(Some("a.x".into())));
    }

    #[test]
    fn canonical_is_a_fixed_point() {
        for raw in ["/a/./b//c/../d%2e/", "/%41%2d/..", "/x/%7E/"] {
            let once = canonical_path(raw).unwrap();
            assert_eq!(canonical_path(&once).unwrap(), once);
        }
    }
}
