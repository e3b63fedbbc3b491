//! Configuration: TOML file, then `HERO_PROXY_<FIELD>` environment overlay, then `HERO_PROXY_<FIELD>_FILE` for
//! values that must not sit in the environment of a long-lived process (the file's content is read instead).
//!
//! Runtime policy (users, groups, roles, providers, allowlist) lives in sqlite and the secret store, not here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ProxyError, Result};

/// Environment prefix of the overlay.
pub const ENV_PREFIX: &str = "HERO_PROXY_";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the proxy listener (TLS is terminated in front of it unless `tls_cert`/`tls_key` are set).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, the public listener terminates TLS itself (ALPN `http/1.1`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`; set both or neither.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Directory of the proxy's sqlite database (`hero_proxy.db`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Encrypted secret store directory; default `<state_dir>/secrets`.
    #[serde(default)]
    pub secrets_dir: Option<PathBuf>,
    /// Directory holding `hero_proxy/rpc.sock`; default `$HERO_SOCKET_DIR` or `~/hero/var/sockets`.
    #[serde(default)]
    pub socket_dir: Option<PathBuf>,
    /// Scheme browsers use to reach the proxy; the OAuth redirect URI is `<scheme>://<Host>/oauth/callback`.
    #[serde(default = "default_scheme")]
    pub public_scheme: String,
    /// Public origin (`https://admin.example.org`) of the OAuth redirect URI. Required unless
    /// `redirect_uri_from_host` is set: a redirect URI built from whatever `Host` a request carries is the unsafe
    /// choice, so it is not the default.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Build the redirect URI from the request's (strictly validated) `Host` instead of `public_url`: for one
    /// proxy serving several hosts, each registered with the provider.
    #[serde(default)]
    pub redirect_uri_from_host: bool,
    /// Peers whose `X-Forwarded-*` headers are believed. Default: none (oauth2-proxy's default of "everyone" was a CVE).
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    /// A session unused this long ends.
    #[serde(default = "default_idle")]
    pub session_idle_secs: u64,
    /// A session ends this long after login whatever its use.
    #[serde(default = "default_absolute")]
    pub session_absolute_secs: u64,
    /// Lifetime of an `X-Hero-Assertion`.
    #[serde(default = "default_assertion_ttl")]
    pub assertion_ttl_secs: u64,
    /// How long a started login (state, nonce, PKCE verifier) may wait for its callback.
    #[serde(default = "default_state_ttl")]
    pub login_state_ttl_secs: u64,
    /// Most used sign-in states remembered, so a replayed callback is refused (see `login::Logins`: sign-ins in
    /// flight are held by the browsers, not by the edge, so there is no bound on those to set).
    #[serde(default = "default_login_used_max")]
    pub login_used_max: usize,
    /// A client must send a request's whole head within this long (slowloris); also the longest a kept-alive
    /// connection may sit between two requests (hyper arms one timer for both).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// A client connection on which nothing was read or written for this long (checked once a period, so closed
    /// within 1-2 periods) is closed: a stalled body upload, a reader that stopped reading.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Longest wait for an upstream's response head (connect included); then 504.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_secs: u64,
    /// Longest an open WebSocket tunnel goes without its access being checked again when nothing announced a
    /// change (the admin allowlist and owner slot are written by other processes); see `crate::tunnel`.
    #[serde(default = "default_tunnel_recheck")]
    pub tunnel_recheck_secs: u64,
    /// Provider used by `/oauth/login` when none is named.
    #[serde(default = "default_provider")]
    pub default_provider: String,
    /// The provider whose login names `deployer/ADMIN_FORGE_USERS` lists (another provider's `alice` is not the
    /// Forge's `alice`, so only users of this provider can be admitted by name).
    #[serde(default = "default_provider")]
    pub admin_provider: String,
    /// Providers declared in the file (in addition to the one seeded from the secret store).
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Routes, matched by host then longest path prefix.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Accept loops, each a single-threaded runtime on its own thread with its own `SO_REUSEPORT` listener
    /// (default: number of CPUs). Requests never hop threads, which is what makes a small proxy fast.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Forge `groups` claim value (`org` or `org:team`) → proxy groups the user is put in at login.
    #[serde(default)]
    pub group_map: BTreeMap<String, Vec<String>>,
    /// Whose Forge tokens the vault keeps after a sign-in (see [`KeepTokens`]).
    #[serde(default)]
    pub keep_tokens: KeepTokens,
}

/// Whose access and refresh tokens the vault keeps.
///
/// Why a choice: an edge on someone's own machine (a tester's VM, where the tester has root) keeps its vault and
/// the vault's master key on that machine. Every admin who opened the VM used to leave a refresh token there that
/// acts as the admin on Forge. With `owner`, only the owner's tokens are kept (`cockpit/FORGE_OWNER`, checked as
/// [`crate::app::App::owner_allowed`] does). Anyone else signs in with no tokens kept: their session works until
/// the access token would have expired, then they sign in again (a redirect through Forge, which remembers them),
/// and no route can pass a token of theirs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepTokens {
    /// Everyone's: an edge the team runs itself (the dashboard).
    #[default]
    Everyone,
    /// Only the machine owner's: an edge on a machine someone else controls.
    Owner,
}

/// An OIDC provider declared in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Short id (`forge`), used in slot names and `X-Hero-Provider`.
    pub id: String,
    /// Issuer URL; discovery is fetched from `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// File holding the client secret (absent: public client, PKCE only).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Override of the constant scope string (see `oidc::FORGE_SCOPE`).
    #[serde(default)]
    pub scope: Option<String>,
}

/// A route as written in the file; validated into `routes::Route`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Stable id (`routes.set`/`routes.remove`); default `<host or *><path>`, e.g. `*/cockpit`.
    #[serde(default)]
    pub id: Option<String>,
    /// Host to match (without port); absent = any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries.
    #[serde(default = "default_path")]
    pub path: String,
    /// `http://host:port` or `unix:/path/to.sock`.
    pub upstream: String,
    /// `public`, `sso`, `admin`, or `claim:<rule>`.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Refused if set: `X-Hero-Context` is the user's context id (`users.set_context`), not the route's. Kept as
    /// a field so an old config gets that explanation instead of "unknown field".
    #[serde(default)]
    pub context: Option<String>,
    /// Send the user's Forge access token as `X-Hero-Forge-Token` (off by default).
    #[serde(default)]
    pub pass_token: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}
fn default_state_dir() -> PathBuf {
    home().join("hero/var/hero_proxy")
}
fn default_scheme() -> String {
    "https".into()
}
fn default_idle() -> u64 {
    8 * 3600
}
fn default_absolute() -> u64 {
    7 * 24 * 3600
}
fn default_assertion_ttl() -> u64 {
    300
}
fn default_state_ttl() -> u64 {
    600
}
fn default_login_used_max() -> usize {
    100_000
}
fn default_header_read_timeout() -> u64 {
    20
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_upstream_timeout() -> u64 {
    60
}
fn default_tunnel_recheck() -> u64 {
    30
}
fn default_provider() -> String {
    "forge".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_policy() -> String {
    "sso".into()
}

/// Fields the env overlay may set, with how to parse them.
const SCALAR_FIELDS: &[&str] = &[
    "listen",
    "state_dir",
    "secrets_dir",
    "socket_dir",
    "public_scheme",
    "public_url",
    "default_provider",
    "admin_provider",
    "tls_cert",
    "tls_key",
    "keep_tokens",
];
const INT_FIELDS: &[&str] = &[
    "workers",
    "session_idle_secs",
    "session_absolute_secs",
    "assertion_ttl_secs",
    "login_state_ttl_secs",
    "login_used_max",
    "header_read_timeout_secs",
    "idle_timeout_secs",
    "upstream_timeout_secs",
    "tunnel_recheck_secs",
];
const LIST_FIELDS: &[&str] = &["trusted_proxies"];
const BOOL_FIELDS: &[&str] = &["redirect_uri_from_host"];
/// Variables with the prefix that are not config fields (read by `main.rs`).
const NOT_FIELDS: &[&str] = &["HERO_PROXY_LOG", "HERO_PROXY_CONFIG"];

impl Config {
    /// Parses TOML text and applies the overlay from `env` (pass `std::env::vars()` in production).
    pub fn from_toml_with_env<I>(text: &str, env: I) -> Result<Config>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ProxyError::Config(format!("TOML: {e}")))?;
        for (k, v) in env {
            if NOT_FIELDS.contains(&k.as_str()) {
                continue;
            }
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let (field, value) = match rest.strip_suffix("_FILE") {
                Some(f) => {
                    let content = std::fs::read_to_string(&v)
                        .map_err(|e| ProxyError::Config(format!("{k}: cannot read {v}: {e}")))?;
                    (f.to_ascii_lowercase(), content.trim_end().to_owned())
                }
                None => (rest.to_ascii_lowercase(), v),
            };
            if SCALAR_FIELDS.contains(&field.as_str()) {
                table.insert(field, toml::Value::String(value));
            } else if INT_FIELDS.contains(&field.as_str()) {
                let n: i64 = value
                    .parse()
                    .map_err(|_| ProxyError::Config(format!("{k}: not an integer")))?;
                table.insert(field, toml::Value::Integer(n));
            } else if BOOL_FIELDS.contains(&field.as_str()) {
                let b: bool = value
                    .parse()
                    .map_err(|_| ProxyError::Config(format!("{k}: not true or false")))?;
                table.insert(field, toml::Value::Boolean(b));
            } else if LIST_FIELDS.contains(&field.as_str()) {
                let items = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect();
                table.insert(field, toml::Value::Array(items));
            } else {
                return Err(ProxyError::Config(format!(
                    "unknown environment setting {k}"
                )));
            }
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ProxyError::Config(e.to_string()))?;
        if cfg.public_url.is_none() && !cfg.redirect_uri_from_host {
            return Err(ProxyError::Config(
                "set public_url (the origin of the OAuth redirect URI), or redirect_uri_from_host = true".into(),
            ));
        }
        for (name, v) in [
            ("session_idle_secs", cfg.session_idle_secs),
            ("session_absolute_secs", cfg.session_absolute_secs),
            ("header_read_timeout_secs", cfg.header_read_timeout_secs),
            ("idle_timeout_secs", cfg.idle_timeout_secs),
            ("upstream_timeout_secs", cfg.upstream_timeout_secs),
            ("tunnel_recheck_secs", cfg.tunnel_recheck_secs),
            ("login_used_max", cfg.login_used_max as u64),
        ] {
            if v == 0 {
                return Err(ProxyError::Config(format!("{name} must be positive")));
            }
        }
        // Backends refuse an assertion living longer than hero_identity's bound, so a longer ttl would lock
        // every verifying backend out; one shorter than the verifiers' clock leeway would be refreshed on
        // almost every request.
        let ttl = cfg.assertion_ttl_secs;
        if !(10..=hero_identity::MAX_LIFETIME_SECS).contains(&ttl) {
            return Err(ProxyError::Config(format!(
                "assertion_ttl_secs = {ttl}: give 10 to {} seconds (backends refuse longer-lived assertions)",
                hero_identity::MAX_LIFETIME_SECS
            )));
        }
        Ok(cfg)
    }

    /// Reads `path` (missing file = empty config) and applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ProxyError::Config(format!("cannot read {}: {e}", p.display())))?,
            None => String::new(),
        };
        Config::from_toml_with_env(&text, std::env::vars())
    }

    /// Where the secret store lives.
    pub fn secrets_dir(&self) -> PathBuf {
        self.secrets_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("secrets"))
    }

    /// `<socket_dir>/hero_proxy/rpc.sock`.
    pub fn rpc_socket(&self) -> PathBuf {
        let dir = self.socket_dir.clone().unwrap_or_else(|| {
            std::env::var_os("HERO_SOCKET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| home().join("hero/var/sockets"))
        });
        dir.join("hero_proxy").join("rpc.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_env_overlay_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "https://edge.example.org\n").unwrap();
        let text = r#"
            listen = "127.0.0.1:9999"
            [[routes]]
            path = "/"
            upstream = "http://127.0.0.1:9000"
            policy = "public"
        "#;
        let env = vec![
            (
                "HERO_PROXY_LISTEN".to_string(),
                "127.0.0.1:7000".to_string(),
            ),
            (
                "HERO_PROXY_TRUSTED_PROXIES".to_string(),
                "10.0.0.1, ::1".to_string(),
            ),
            ("HERO_PROXY_SESSION_IDLE_SECS".to_string(), "60".to_string()),
            (
                "HERO_PROXY_PUBLIC_URL_FILE".to_string(),
                f.display().to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::from_toml_with_env(text, env).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.session_idle_secs, 60);
        assert_eq!(c.public_url.as_deref(), Some("https://edge.example.org"));
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(Config::from_toml_with_env("lisen = \"x\"", Vec::new()).is_err());
        // No public_url and no explicit opt-in to Host-derived redirect URIs.
        assert!(Config::from_toml_with_env("", Vec::new()).is_err());
        assert!(Config::from_toml_with_env("redirect_uri_from_host = true", Vec::new()).is_ok());
        assert!(
            Config::from_toml_with_env("[[routes]]\nupstream=\"x\"\nfoo=1", Vec::new()).is_err()
        );
        let env = vec![("HERO_PROXY_NOPE".to_string(), "1".to_string())];
        assert!(Config::from_toml_with_env("redirect_uri_from_host = true", env).is_err());
    }

    #[test]
    fn keep_tokens_is_everyone_unless_set_and_nothing_else_is_accepted() {
        let base = "redirect_uri_from_host = true\n";
        let parse = |extra: &str, env: Vec<(String, String)>| {
            Config::from_toml_with_env(&format!("{base}{extra}"), env).map(|c| c.keep_tokens)
        };
        assert_eq!(parse("", Vec::new()).unwrap(), KeepTokens::Everyone);
        assert_eq!(
            parse("keep_tokens = \"owner\"", Vec::new()).unwrap(),
            KeepTokens::Owner
        );
        let env = vec![("HERO_PROXY_KEEP_TOKENS".to_string(), "owner".to_string())];
        assert_eq!(parse("", env).unwrap(), KeepTokens::Owner);
        for bad in ["\"Owner\"", "\"admins\"", "\"\"", "true"] {
            assert!(
                parse(&format!("keep_tokens = {bad}"), Vec::new()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_assertion_ttl_stays_within_what_backends_accept() {
        for (ttl, ok) in [
            (300, true),
            (10, true),
            (3600, true),
            (0, false),
            (9, false),
            (3601, false),
        ] {
            let text = format!("redirect_uri_from_host = true\nassertion_ttl_secs = {ttl}");
            let r = Config::from_toml_with_env(&text, Vec::new());
            assert_eq!(r.is_ok(), ok, "{ttl}: {:?}", r.err());
        }
    }
}
