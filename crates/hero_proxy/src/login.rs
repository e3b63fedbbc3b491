//! Login attempts in flight: `state` → (provider, nonce, PKCE verifier, return-to), single-use, with a TTL sweep.
//! And the return-to rule: only same-origin relative paths, so the login flow can't be used as an open redirect.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// One login in flight.
pub struct PendingLogin {
    /// Provider id.
    pub provider: String,
    /// id_token nonce.
    pub nonce: String,
    /// PKCE verifier.
    pub verifier: Zeroizing<String>,
    /// Where to go after the callback (already validated).
    pub return_to: String,
    /// The exact redirect_uri sent at authorize (the token request must repeat it).
    pub redirect_uri: String,
    /// Creation time.
    pub created_at: u64,
    /// The client that started it (see `App::client_ip`).
    pub client: IpAddr,
}

/// Why a callback's state was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    /// Never issued, or already used (replay).
    Unknown,
    /// Issued but older than the TTL.
    Expired,
}

#[derive(Default)]
struct Table {
    map: HashMap<String, PendingLogin>,
    /// States per client, oldest first.
    by_client: HashMap<IpAddr, VecDeque<String>>,
}

impl Table {
    fn remove(&mut self, state: &str) -> Option<PendingLogin> {
        let p = self.map.remove(state)?;
        if let Some(q) = self.by_client.get_mut(&p.client) {
            q.retain(|s| s != state);
            if q.is_empty() {
                self.by_client.remove(&p.client);
            }
        }
        Some(p)
    }

    fn sweep(&mut self, ttl: u64, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, v| v.created_at + ttl > now);
        let map = &self.map;
        self.by_client.retain(|_, q| {
            q.retain(|s| map.contains_key(s));
            !q.is_empty()
        });
        before - self.map.len()
    }
}

/// How many sign-ins one browser may have in flight at once — tabs opened while signed out each start one, and
/// each must be able to finish. The login cookie holds their states, newest first.
pub const LOGIN_COOKIE_STATES: usize = 4;

/// The login cookie's value once a new sign-in with `state` starts: it first, then up to
/// [`LOGIN_COOKIE_STATES`] − 1 of the states already in `current` (states are base64url, so `.` separates).
/// Why a list: with one state per cookie, the second tab's sign-in overwrote the first's, and the first tab then
/// failed with "started in another browser".
pub fn login_cookie_with(current: Option<&str>, state: &str) -> String {
    std::iter::once(state)
        .chain(login_cookie_states(current).filter(|s| *s != state))
        .take(LOGIN_COOKIE_STATES)
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether the login cookie names `state` (the callback's browser binding).
pub fn login_cookie_names(current: Option<&str>, state: &str) -> bool {
    !state.is_empty() && login_cookie_states(current).any(|s| s == state)
}

/// The login cookie's value once `state` is used up (empty: the cookie goes).
pub fn login_cookie_without(current: Option<&str>, state: &str) -> String {
    login_cookie_states(current)
        .filter(|s| *s != state)
        .collect::<Vec<_>>()
        .join(".")
}

fn login_cookie_states(current: Option<&str>) -> impl Iterator<Item = &str> {
    current
        .unwrap_or("")
        .split('.')
        .filter(|s| !s.is_empty())
        .take(LOGIN_COOKIE_STATES)
}

/// The unit a per-client bound counts in: an IPv4 address, or an IPv6 address's /64 (an IPv4-mapped IPv6
/// address counts as its IPv4 one). Why /64: it is the smallest block a site is handed, so one host (or one
/// customer) picks freely among 2^64 addresses in it — counted per address, a single machine could pose as as
/// many clients as it liked and push everyone else's logins out of the table.
pub fn client_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The in-flight table (in memory: a restart only costs logins that were mid-flight).
///
/// Why bounded per client, by eviction rather than refusal: `/oauth/login` is unauthenticated, so a flood must
/// not grow memory, and refusing when full (as a global cap alone does) hands the flood a lock-out of every real
/// sign-in for the state TTL. Here a client holds at most `per_client` logins (its oldest is dropped for a new
/// one), and when the whole table is full the oldest login of the client holding the most is dropped. A client is
/// an IPv4 address or an IPv6 /64 ([`client_bucket`]). A flood from one client therefore only ever churns its own
/// entries; to push out someone else's login an attacker needs more clients than the table has room for per
/// client. Behind a gateway set `trusted_proxies`, or every visitor is one client.
pub struct PendingLogins {
    ttl: u64,
    max: usize,
    per_client: usize,
    table: Mutex<Table>,
}

impl PendingLogins {
    /// With a TTL in seconds, a cap on the table and a cap per client (both at least 1).
    pub fn new(ttl: u64, max: usize, per_client: usize) -> PendingLogins {
        PendingLogins {
            ttl,
            max: max.max(1),
            per_client: per_client.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    /// Stores a login under `state`, evicting as described on the type (never refuses).
    pub fn insert(&self, state: String, p: PendingLogin, now: u64) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut p = p;
        p.client = client_bucket(p.client);
        let client = p.client;
        while t.by_client.get(&client).map_or(0, VecDeque::len) >= self.per_client {
            let Some(old) = t.by_client.get_mut(&client).and_then(VecDeque::pop_front) else {
                break;
            };
            t.map.remove(&old);
        }
        if t.map.len() >= self.max {
            t.sweep(self.ttl, now);
        }
        while t.map.len() >= self.max {
            let heaviest = t
                .by_client
                .iter()
                .max_by_key(|(_, q)| q.len())
                .and_then(|(_, q)| q.front().cloned());
            match heaviest {
                Some(old) => {
                    t.remove(&old);
                }
                None => break,
            }
        }
        t.by_client
            .entry(client)
            .or_default()
            .push_back(state.clone());
        t.map.insert(state, p);
    }

    /// Removes and returns the login for `state` (single use: a replay finds nothing).
    pub fn take(&self, state: &str, now: u64) -> Result<PendingLogin, StateError> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let p = t.remove(state).ok_or(StateError::Unknown)?;
        if p.created_at + self.ttl <= now {
            return Err(StateError::Expired);
        }
        Ok(p)
    }

    /// Drops expired entries (also run periodically).
    pub fn sweep(&self, now: u64) -> usize {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.sweep(self.ttl, now)
    }

    /// Number in flight.
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// True if none in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Accepts a return-to target only if it is a same-origin relative path: starts with a single `/`, no `//` or `/\`
/// prefix (protocol-relative), no backslash anywhere (browsers treat `\` as `/`), no control characters or
/// whitespace, at most 2048 bytes. Anything else falls back to `/`.
pub fn safe_return_to(raw: Option<&str>) -> String {
    let Some(s) = raw else { return "/".into() };
    let ok = s.len() <= 2048
        && s.starts_with('/')
        && !s.starts_with("//")
        && !s.contains('\\')
        && !s
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80);
    if ok {
        s.to_owned()
    } else {
        "/".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(now: u64) -> PendingLogin {
        from(now, [127, 0, 0, 1])
    }

    fn from(now: u64, ip: [u8; 4]) -> PendingLogin {
        PendingLogin {
            provider: "forge".into(),
            nonce: "n".into(),
            verifier: Zeroizing::new("v".into()),
            return_to: "/".into(),
            redirect_uri: "r".into(),
            created_at: now,
            client: IpAddr::from(ip),
        }
    }

    #[test]
    fn single_use_and_ttl() {
        let t = PendingLogins::new(600, 100, 10);
        t.insert("s".into(), p(1000), 1000);
        assert!(t.take("s", 1001).is_ok());
        assert_eq!(t.take("s", 1001).err(), Some(StateError::Unknown));
        t.insert("old".into(), p(1000), 1000);
        assert_eq!(t.take("old", 1600).err(), Some(StateError::Expired));
        t.insert("x".into(), p(1000), 1000);
        assert_eq!(t.sweep(1700), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_flood_from_one_client_never_evicts_another_clients_login() {
        let t = PendingLogins::new(600, 20, 4);
        t.insert("victim".into(), from(1000, [10, 0, 0, 1]), 1000);
        for (name, ip) in [("one address", [6u8, 6, 6, 6]), ("five", [6, 6, 6, 0])] {
            for i in 0..1000u32 {
                let mut ip = ip;
                if name == "five" {
                    ip[3] = (i % 5) as u8;
                }
                t.insert(format!("{name}{i}"), from(1000, ip), 1000);
            }
            assert!(t.len() <= 20, "{name}");
        }
        assert!(
            t.take("victim", 1001).is_ok(),
            "the victim's login survived"
        );
        // The flood's newest logins still work: nobody is refused.
        assert!(t.take("five999", 1001).is_ok());
    }

    /// The same flood from one IPv6 host, which has a /64 to pick addresses from (and the same host through an
    /// IPv4-mapped address): one client. Before, each address counted alone, so the host held the whole table.
    #[test]
    fn a_flood_from_one_ipv6_block_is_one_client() {
        let t = PendingLogins::new(600, 20, 4);
        t.insert("victim".into(), from(1000, [10, 0, 0, 1]), 1000);
        let v6 = |i: u64| {
            let base: u128 = 0x2001_0db8_0000_0042 << 64;
            IpAddr::V6(std::net::Ipv6Addr::from(
                base | u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            ))
        };
        for i in 0..1000u64 {
            let mut login = p(1000);
            login.client = v6(i);
            t.insert(format!("v6-{i}"), login, 1000);
            let mut mapped = p(1000);
            mapped.client = IpAddr::V6(std::net::Ipv4Addr::new(6, 6, 6, 6).to_ipv6_mapped());
            t.insert(format!("mapped-{i}"), mapped, 1000);
            t.insert(format!("v4-{i}"), from(1000, [6, 6, 6, 6]), 1000);
        }
        assert!(t.len() <= 20);
        assert!(
            t.take("victim", 1001).is_ok(),
            "the victim's login survived"
        );
        assert!(t.take("v6-999", 1001).is_ok());
        assert!(t.take("v4-999", 1001).is_ok());
        assert_eq!(
            client_bucket(IpAddr::V6(
                std::net::Ipv4Addr::new(6, 6, 6, 6).to_ipv6_mapped()
            )),
            IpAddr::from([6, 6, 6, 6])
        );
        assert_eq!(client_bucket(v6(1)), client_bucket(v6(2)));
        assert_ne!(
            client_bucket(v6(1)),
            client_bucket("2001:db8:0:43::1".parse().unwrap())
        );
    }

    #[test]
    fn the_login_cookie_holds_the_newest_few_states() {
        let mut c = String::new();
        for s in ["a", "b", "c", "d", "e"] {
            c = login_cookie_with(Some(&c), s);
        }
        assert_eq!(c, "e.d.c.b");
        assert!(login_cookie_names(Some(&c), "b"));
        assert!(!login_cookie_names(Some(&c), "a"), "the oldest made room");
        assert!(!login_cookie_names(Some(&c), ""));
        assert!(!login_cookie_names(Some("e..d"), ""));
        assert!(!login_cookie_names(None, "e"));
        assert_eq!(login_cookie_with(Some(&c), "c"), "c.e.d.b", "no duplicates");
        assert_eq!(login_cookie_without(Some(&c), "d"), "e.c.b");
        assert_eq!(login_cookie_without(Some("e"), "e"), "");
        // A cookie stuffed by hand is read only as far as the bound.
        let stuffed = vec!["x"; 1000].join(".") + ".late";
        assert!(!login_cookie_names(Some(&stuffed), "late"));
    }

    #[test]
    fn open_redirects_are_refused() {
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil",
            "/%0d%0aSet-Cookie:x".replace("%0d%0a", "\r\n").as_str(),
            "javascript:alert(1)",
            "evil.example",
            "/ok\tx",
            "",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_to(Some("/dash/x?y=1#z")), "/dash/x?y=1#z");
        assert_eq!(safe_return_to(Some("/%2F%2Fevil")), "/%2F%2Fevil");
        assert_eq!(safe_return_to(None), "/");
    }
}
