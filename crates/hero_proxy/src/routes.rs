//! Routes: host + path prefix → upstream, each with an auth policy.

use std::sync::Arc;

use hero_identity::ClaimRule;

use crate::config::RouteConfig;
use crate::error::{ProxyError, Result};
use crate::target::TargetError;
use crate::upstream::Upstream;

/// Who may pass a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Anyone; identity headers are still stripped (and injected if a session exists).
    Public,
    /// Any signed-in user.
    Sso,
    /// Signed in and Forge username in `deployer/ADMIN_FORGE_USERS` or claim `groups.admin`.
    Admin,
    /// Signed in as the machine's owner (the Forge login in `cockpit/FORGE_OWNER`) or as an admin (as
    /// [`Policy::Admin`]): what a personal demo VM's cockpit needs. A policy of its own rather than
    /// `claim:users.<name>`, because a local username is not a Forge identity (see `App::owner_allowed`).
    Owner,
    /// Signed in with a claim matching the rule.
    Claim(ClaimRule),
}

impl Policy {
    /// Parses `public | sso | admin | owner | claim:<rule>`.
    pub fn parse(s: &str) -> Result<Policy> {
        match s {
            "public" => Ok(Policy::Public),
            "sso" => Ok(Policy::Sso),
            "admin" => Ok(Policy::Admin),
            "owner" => Ok(Policy::Owner),
            other => match other.strip_prefix("claim:") {
                Some(rule) => ClaimRule::parse(rule)
                    .map(Policy::Claim)
                    .map_err(|e| ProxyError::Config(format!("policy {other:?}: {e}"))),
                None => Err(ProxyError::Config(format!(
                    "unknown policy {other:?} (public|sso|admin|owner|claim:<rule>)"
                ))),
            },
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Public => f.write_str("public"),
            Policy::Sso => f.write_str("sso"),
            Policy::Admin => f.write_str("admin"),
            Policy::Owner => f.write_str("owner"),
            Policy::Claim(r) => write!(f, "claim:{r}"),
        }
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Stable id: the configured one, or `<host or *><path>`.
    pub id: String,
    /// Lower-case host without port; `None` = any.
    pub host: Option<String>,
    /// Path prefix, normalised without trailing `/` (except the root).
    pub path: String,
    /// Where requests go.
    pub upstream: Upstream,
    /// Who may pass.
    pub policy: Policy,
    /// `X-Hero-Forge-Token` pass-through.
    pub pass_token: bool,
}

impl Route {
    /// Validates a route from the file.
    pub fn from_config(c: &RouteConfig) -> Result<Route> {
        if !c.path.starts_with('/') {
            return Err(ProxyError::Config(format!(
                "route path {:?} must start with '/'",
                c.path
            )));
        }
        let path = if c.path.len() > 1 {
            c.path.trim_end_matches('/').to_owned()
        } else {
            c.path.clone()
        };
        let path = matchable_path(&path).ok_or_else(|| {
            ProxyError::Config(format!(
                "route path {:?} could never match: write it as requests are matched — canonical (no `//`, \
                 `.` or `..` segments, no escapes of letters, digits or `-._~`), lower case, without `;`",
                c.path
            ))
        })?;
        let host = c
            .host
            .as_deref()
            .map(|h| {
                matchable_host(h).ok_or_else(|| {
                    ProxyError::Config(format!(
                        "route host {h:?} could never match: a host name or IP address without a port or \
                         trailing dot (a request's port is ignored when routes are matched)"
                    ))
                })
            })
            .transpose()?;
        let id =
            c.id.clone()
                .unwrap_or_else(|| format!("{}{path}", host.as_deref().unwrap_or("*")));
        if id.is_empty()
            || id.len() > 128
            || id.chars().any(|ch| ch.is_control() || ch.is_whitespace())
        {
            return Err(ProxyError::Config(format!(
                "route id {id:?} must be 1-128 characters without spaces or control characters"
            )));
        }
        if c.context.is_some() {
            return Err(ProxyError::Config(format!(
                "route {id:?}: a route has no context any more; X-Hero-Context is the signed-in user's \
                 context id (set with users.set_context)"
            )));
        }
        Ok(Route {
            id,
            host,
            path,
            upstream: Upstream::parse(&c.upstream)?,
            policy: Policy::parse(&c.policy)?,
            pass_token: c.pass_token,
        })
    }

    /// The route as the file (and the database) writes it.
    pub fn to_config(&self) -> RouteConfig {
        RouteConfig {
            id: Some(self.id.clone()),
            host: self.host.clone(),
            path: self.path.clone(),
            upstream: self.upstream.describe(),
            policy: self.policy.to_string(),
            context: None,
            pass_token: self.pass_token,
        }
    }

    /// Whether this route is picked before `other` when both match ([`Routes::new`]'s order): a host route
    /// before any any-host route, whatever the lengths; within each, the longer path.
    fn outranks(&self, other: &Route) -> bool {
        match (self.host.is_some(), other.host.is_some()) {
            (true, false) => true,
            (false, true) => false,
            _ => self.path.len() > other.path.len(),
        }
    }

    /// Whether the route applies to a request for `host` (port already stripped): any host, or this one.
    fn serves_host(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (None, _) => true,
            (Some(rh), Some(h)) => rh.eq_ignore_ascii_case(h),
            (Some(_), None) => false,
        }
    }

    /// Segment-boundary prefix match on a canonical path (`target::canonical_path`); the root route matches
    /// every path, and only paths: a target that is not one never reaches here, and `/` is not a wildcard for it.
    fn path_matches(&self, path: &str) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        self.path == "/"
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The route table.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<Arc<Route>>);

impl Routes {
    /// Builds the table; host-specific routes win over any-host routes, then the longest prefix wins.
    pub fn new(mut routes: Vec<Route>) -> Routes {
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path.len().cmp(&a.path.len()))
        });
        Routes(routes.into_iter().map(Arc::new).collect())
    }

    /// Finds the route for `host` (port ignored) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<Arc<Route>> {
        let host = host.map(strip_port);
        self.0
            .iter()
            .find(|r| r.path_matches(path) && r.serves_host(host))
            .cloned()
    }

    /// [`Routes::find`], refusing a path that backends could read as another route's: every reading of the path
    /// must pick the same route. The readings: the path as given; without the `;parameters` of its segments (how
    /// servlet containers — Tomcat, Jetty, Spring — read `/admin;x/y`: as `/admin/y`, empty segments merged); and
    /// case-folded (how case-insensitive servers read `/ADMIN`). Stripping or folding before matching would only
    /// move the bypass (`/pub;x` would then match a public `/pub` route while a literal backend serves a protected
    /// `/pub;x`), so the ambiguous path is refused instead. Only a path with `;` or an upper-case letter (outside
    /// `%`-escapes, which name the same octet in either case) has other readings.
    ///
    /// And every reading, the path as given included, is also read as string-prefix servers read it. nginx's
    /// `location /admin` also serves `/adminsecret.txt`, so a non-public route that would outrank the chosen one
    /// (see [`Route::outranks`]) and whose path is a prefix of this one but not at a `/` (`/admin` for
    /// `/admin.old/x`) would be such a backend's choice — with its protected content, under the chosen route's
    /// weaker policy. That path is refused too, unless the other route's policy is the chosen one's (nothing to
    /// bypass) or public (nothing protected); an operator who wants `/admin-guide` served gives it its own route.
    pub fn find_unambiguous(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> Result<Option<Arc<Route>>, TargetError> {
        let route = self.find(host, path);
        let readings = other_readings(path);
        let same = |other: Option<Arc<Route>>| match (&route, &other) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !readings.iter().all(|p| same(self.find(host, p))) {
            return Err(TargetError::AmbiguousRoute);
        }
        if let Some(chosen) = &route {
            let host = host.map(strip_port);
            let mut all = std::iter::once(path).chain(readings.iter().map(String::as_str));
            if all.any(|p| self.prefix_reading_differs(host, p, chosen)) {
                return Err(TargetError::AmbiguousRoute);
            }
        }
        Ok(route)
    }

    /// Whether a string-prefix server would serve `path` from a stronger route's area than `chosen`'s (see
    /// [`Routes::find_unambiguous`]).
    fn prefix_reading_differs(&self, host: Option<&str>, path: &str, chosen: &Route) -> bool {
        self.0.iter().any(|r| {
            r.path != "/"
                && path.len() > r.path.len()
                && path.starts_with(r.path.as_str())
                && path.as_bytes()[r.path.len()] != b'/'
                && r.policy != Policy::Public
                && r.policy != chosen.policy
                && r.outranks(chosen)
                && r.serves_host(host)
        })
    }

    /// All routes, in match order.
    pub fn all(&self) -> &[Arc<Route>] {
        &self.0
    }
}

/// A route's path as requests will be compared with it, or `None` when no request could ever match it.
///
/// Why refuse rather than accept: a request path is canonicalised (`target::canonical_path`) and refused when
/// another letter case or its `;parameters` would pick another route, so a route written `/Secret`, `//x`,
/// `/%7Ex` or `/a;b` is never chosen — its requests silently fall to a broader route and its policy, and a
/// backend that reads paths case-insensitively serves the protected area under it.
fn matchable_path(path: &str) -> Option<String> {
    let canonical = crate::target::canonical_path(path).ok()?;
    (canonical == path && !path.contains(';') && fold_case(path) == path).then_some(canonical)
}

/// The readings of `path` other than as given (see [`Routes::find_unambiguous`]); none for most paths.
fn other_readings(path: &str) -> Vec<String> {
    let mut readings = Vec::new();
    if path.contains(';') {
        let stripped: String = path
            .split('/')
            .map(|seg| seg.split(';').next().unwrap_or(""))
            .filter(|seg| !seg.is_empty())
            .fold(String::new(), |acc, seg| acc + "/" + seg);
        // `/a;x/` keeps its trailing `/`; a path of parameters only (`/;x`) is the root.
        let stripped = match (stripped.is_empty(), path.ends_with('/')) {
            (true, _) => "/".to_owned(),
            (false, true) => stripped + "/",
            (false, false) => stripped,
        };
        readings.push(fold_case(&stripped));
        readings.push(stripped);
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        let folded = fold_case(path);
        if folded != path {
            readings.push(folded);
        }
    }
    readings
}

/// `path` in lower case, but for the two hex digits of each `%`-escape (`%C3` and `%c3` are the same octet, and
/// the canonical spelling is upper case): how a case-insensitive server reads it.
fn fold_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut hex_left = 0;
    for c in path.chars() {
        if hex_left > 0 {
            hex_left -= 1;
            out.push(c);
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A route's host as requests will be compared with it (lower case, an IPv6 literal without brackets, as
/// [`strip_port`] leaves a request's), or `None` when no request could match it: one with a port (a request's
/// port is stripped before matching), a trailing dot or anything else a request's `Host` is refused for.
fn matchable_host(host: &str) -> Option<String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some(bare.to_ascii_lowercase());
    }
    let canonical = crate::target::canonical_authority(host).ok()?;
    (!canonical.contains(':')).then_some(canonical)
}

/// `host:port` → `host`; keeps IPv6 literals intact.
pub fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    h.rsplit_once(':').map(|(a, _)| a).unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, policy: &str) -> Route {
        Route::from_config(&RouteConfig {
            id: None,
            host: host.map(str::to_owned),
            path: path.into(),
            upstream: "http://127.0.0.1:1".into(),
            policy: policy.into(),
            context: None,
            pass_token: false,
        })
        .unwrap()
    }

    #[test]
    fn matching() {
        let t = Routes::new(vec![
            route(None, "/", "public"),
            route(None, "/api", "sso"),
            route(Some("admin.x"), "/", "admin"),
        ]);
        assert_eq!(t.find(Some("a.x"), "/api/v").unwrap().policy, Policy::Sso);
        assert_eq!(t.find(Some("a.x"), "/apix").unwrap().policy, Policy::Public);
        assert_eq!(
            t.find(Some("ADMIN.x:443"), "/api").unwrap().policy,
            Policy::Admin
        );
        assert_eq!(t.find(None, "/api").unwrap().policy, Policy::Sso);
        for not_a_path in ["*", "", "api", "localhost:80"] {
            assert!(t.find(Some("a.x"), not_a_path).is_none(), "{not_a_path:?}");
        }
    }

    #[test]
    fn a_path_another_server_would_read_as_another_route_is_refused() {
        let t = Routes::new(vec![
            route(None, "/", "sso"),
            route(None, "/admin", "admin"),
            route(None, "/pub", "public"),
        ]);
        let policy = |p: &str| {
            t.find_unambiguous(None, p)
                .map(|r| r.unwrap().policy.clone())
        };
        // (path, the policy it gets, or None for refused)
        let cases: &[(&str, Option<Policy>)] = &[
            // Servlet path parameters in either direction: a stronger route hidden, or a weaker one borrowed.
            ("/admin;x", None),
            ("/admin;jsessionid=1/secret", None),
            ("/pub;x", None),
            ("/pub;x/y", None),
            ("/a;b/admin", Some(Policy::Sso)),
            // Letter case, likewise.
            ("/ADMIN", None),
            ("/Admin/x", None),
            ("/PUB/x", None),
            // Readings that land on the same route are fine.
            ("/admin/a;b", Some(Policy::Admin)),
            ("/admin/Report.PDF", Some(Policy::Admin)),
            ("/pub/Logo.SVG;v=2", Some(Policy::Public)),
            ("/Other/x;y", Some(Policy::Sso)),
            ("/admin", Some(Policy::Admin)),
            // As string-prefix servers read them (nginx `location /admin`): a stronger route's area reached under
            // a weaker route is refused; a public one's, or the same policy's, is not.
            ("/administrator", None),
            ("/admin.old/x", None),
            ("/admin-", None),
            ("/admin%20x", None),
            ("/pubx", Some(Policy::Sso)),
            ("/pub.d/x", Some(Policy::Sso)),
            ("/adm", Some(Policy::Sso)),
            ("/x/admin", Some(Policy::Sso)),
            // Every reading is also read as a string-prefix server would: case-folded, or without parameters.
            ("/ADMINsecret", None),
            ("/Admin-backup.tar", None),
            ("/adminx;y", None),
            // Empty segments left by stripping parameters merge, as servlet containers do.
            ("/;x/admin/y", None),
            ("/;x/pub/y", None),
            ("/;x/other", Some(Policy::Sso)),
            // %-escapes name the same octet in either case: not another reading.
            ("/caf%C3%A9", Some(Policy::Sso)),
        ];
        for (path, want) in cases {
            match (policy(path), want) {
                (Ok(got), Some(want)) => assert_eq!(&got, want, "{path}"),
                (Err(TargetError::AmbiguousRoute), None) => {}
                (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn policies() {
        assert!(matches!(
            Policy::parse("claim:engineers.*").unwrap(),
            Policy::Claim(_)
        ));
        assert!(Policy::parse("claim:*").is_err());
        assert!(Policy::parse("root").is_err());
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(route(Some("A.x"), "/api/", "sso").id, "a.x/api");
        assert_eq!(route(None, "/", "sso").id, "*/");
    }

    #[test]
    fn a_route_no_request_could_match_is_refused() {
        let make = |host: Option<&str>, path: &str| {
            Route::from_config(&RouteConfig {
                id: Some("r".into()),
                host: host.map(str::to_owned),
                path: path.into(),
                upstream: "http://127.0.0.1:1".into(),
                policy: "admin".into(),
                context: None,
                pass_token: false,
            })
        };
        for path in [
            "/Secret", "/ADMIN", "//x", "/a//b", "/./x", "/a/../b", "/%7Ex", "/%61dmin", "/a;b",
            "/a%2fb", "/a\\b", "/..",
        ] {
            let e = make(None, path).expect_err(path).to_string();
            assert!(e.contains("could never match"), "{path}: {e}");
        }
        for host in [
            "adm.test:443",
            "adm.test.",
            "",
            "adm..test",
            "adm test",
            "a/b",
            "user@adm.test",
            "[::1]:8080",
            "[::1",
        ] {
            let e = make(Some(host), "/").expect_err(host).to_string();
            assert!(e.contains("could never match"), "{host:?}: {e}");
        }
        // What requests are matched as is accepted, spelled the way they are compared.
        for (host, want) in [
            ("Adm.Test", "adm.test"),
            ("10.0.0.1", "10.0.0.1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("[FE80::1]", "fe80::1"),
        ] {
            assert_eq!(make(Some(host), "/").unwrap().host.as_deref(), Some(want));
        }
        for path in [
            "/",
            "/admin",
            "/admin/",
            "/a-b/c_d.e~f",
            "/a%20b",
            "/caf%C3%A9",
        ] {
            assert!(make(None, path).is_ok(), "{path}");
        }
        assert!(
            make(None, "/caf%c3%a9").is_err(),
            "escapes are written upper case"
        );
        // And each accepted host is found by a request that names it.
        let routes = Routes::new(vec![make(Some("[::1]"), "/").unwrap()]);
        assert!(routes.find(Some("[::1]:8080"), "/x").is_some());
    }

    /// Only a route that would be picked before the chosen one counts for the string-prefix reading: on a host
    /// with its own `/` route, an any-host `/cockpit` route is never picked, so `/cockpit-status` is not refused.
    #[test]
    fn the_prefix_reading_counts_only_routes_that_would_win() {
        let t = Routes::new(vec![
            route(Some("admin.test"), "/", "admin"),
            route(None, "/cockpit", "sso"),
            route(None, "/", "public"),
            route(Some("app.test"), "/api", "admin"),
        ]);
        let policy = |host: &str, p: &str| {
            t.find_unambiguous(Some(host), p)
                .map(|r| r.unwrap().policy.clone())
        };
        for p in ["/cockpit", "/cockpit-status", "/cockpits", "/cockpit.css"] {
            assert_eq!(policy("admin.test", p), Ok(Policy::Admin), "{p}");
        }
        assert_eq!(
            policy("other.test", "/cockpit-status"),
            Err(TargetError::AmbiguousRoute)
        );
        // A host route outranks any any-host route, whatever their lengths.
        assert_eq!(
            policy("app.test", "/apix"),
            Err(TargetError::AmbiguousRoute)
        );
        assert_eq!(policy("app.test", "/other"), Ok(Policy::Public));
        assert_eq!(policy("other.test", "/apix"), Ok(Policy::Public));
    }
}
