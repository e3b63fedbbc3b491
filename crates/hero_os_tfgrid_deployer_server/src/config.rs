//! Configuration: defaults, then a TOML file, then `HERO_DEPLOYER_*` environment variables.
//! Unknown keys in the file and unknown `HERO_DEPLOYER_*` variables are errors, so a typo never
//! silently falls back to a default. Secrets are never configuration values: they live in the
//! secret store, or in a file named by a `*_file` key (`HERO_DEPLOYER_FORGE_ADMIN_TOKEN_FILE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Service name, used for the socket directory and the data directory.
pub const SERVICE: &str = "hero_os_tfgrid_deployer";

/// The Forge used when none is configured: production. Kept as the default (the deployer exists
/// for it), and named in the start-up log and in `server status` so nobody talks to it unaware.
pub const DEFAULT_FORGE_URL: &str = "https://forge.ourworld.tf";

/// Variables with our prefix that are the CLI's, not the server's. Accepted and ignored: the CLI
/// passes its whole environment to the server it starts (`server start`), and an operator who
/// exported them may start the server by hand.
const CLI_ONLY_ENV: &[&str] = &["HERO_DEPLOYER_ENDPOINT"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// State directory: sqlite database, secret store, lock file.
    pub data_dir: PathBuf,
    /// Root of Hero sockets; ours is `<socket_dir>/hero_os_tfgrid_deployer/rpc.sock`.
    pub socket_dir: PathBuf,
    /// Also listen on this TCP address (only behind the SSO edge). Off by default.
    pub tcp_listen: Option<SocketAddr>,
    /// Mode of the socket file: 0o600 (owner only) or 0o660 (owner and group).
    pub socket_mode: u32,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    pub forge: ForgeConfig,
    pub secrets: SecretsConfig,
    /// Provisioning jobs and compute backends (issue 3).
    pub provision: crate::provision::config::ProvisionConfig,
    /// The health watch of ready VMs (issue 14).
    pub health: crate::fleet::health::HealthConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForgeConfig {
    /// Base URL of the Forge, without `/api/v1`.
    pub url: String,
    /// Domain of placeholder emails `<username>@<email_domain>`.
    pub email_domain: String,
    /// Scopes of the API token minted for each user.
    pub user_token_scopes: Vec<String>,
    /// Per-request timeout.
    pub timeout_secs: u64,
    /// Attempts for a request that failed with a connection error or 5xx.
    pub attempts: u32,
    /// Read the admin token from this file instead of the secret slot `deployer/forge_admin_token`.
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// `file` (embedded encrypted store) or `hero_proc`.
    pub backend: SecretsBackend,
    /// Directory of the file store; default `<data_dir>/secrets`.
    pub dir: Option<PathBuf>,
    /// hero_proc socket; default `<socket_dir>/hero_proc/rpc.sock`.
    pub hero_proc_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretsBackend {
    File,
    HeroProc,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: home().join("hero/var").join(SERVICE),
            socket_dir: home().join("hero/var/sockets"),
            tcp_listen: None,
            socket_mode: 0o600,
            max_body_bytes: 1024 * 1024,
            forge: ForgeConfig::default(),
            secrets: SecretsConfig::default(),
            provision: Default::default(),
            health: Default::default(),
        }
    }
}

impl Default for ForgeConfig {
    fn default() -> Self {
        ForgeConfig {
            url: DEFAULT_FORGE_URL.into(),
            email_domain: "nomail.demo.ourworld.tf".into(),
            user_token_scopes: vec![
                "write:repository".into(),
                "write:issue".into(),
                "read:user".into(),
                "read:organization".into(),
            ],
            timeout_secs: 10,
            attempts: 3,
            admin_token_file: None,
        }
    }
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            backend: SecretsBackend::File,
            dir: None,
            hero_proc_socket: None,
        }
    }
}

/// Every environment variable we read, with the setter that applies it.
type Setter = fn(&mut Config, &str) -> Result<(), String>;
const ENV: &[(&str, Setter)] = &[
    ("HERO_DEPLOYER_DATA_DIR", |c, v| {
        c.data_dir = v.into();
        Ok(())
    }),
    ("HERO_DEPLOYER_TCP_LISTEN", |c, v| {
        c.tcp_listen = if v.is_empty() {
            None
        } else {
            Some(
                v.parse()
                    .map_err(|e| format!("not a socket address: {e}"))?,
            )
        };
        Ok(())
    }),
    ("HERO_DEPLOYER_SOCKET_MODE", |c, v| {
        c.socket_mode = u32::from_str_radix(v.trim_start_matches("0o"), 8)
            .map_err(|e| format!("not an octal mode: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_MAX_BODY_BYTES", |c, v| {
        c.max_body_bytes = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_FORGE_URL", |c, v| {
        c.forge.url = v.into();
        Ok(())
    }),
    ("HERO_DEPLOYER_FORGE_EMAIL_DOMAIN", |c, v| {
        c.forge.email_domain = v.into();
        Ok(())
    }),
    ("HERO_DEPLOYER_FORGE_TIMEOUT_SECS", |c, v| {
        c.forge.timeout_secs = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_FORGE_ATTEMPTS", |c, v| {
        c.forge.attempts = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_FORGE_ADMIN_TOKEN_FILE", |c, v| {
        c.forge.admin_token_file = Some(v.into());
        Ok(())
    }),
    ("HERO_DEPLOYER_SECRETS_BACKEND", |c, v| {
        c.secrets.backend = match v {
            "file" => SecretsBackend::File,
            "hero_proc" => SecretsBackend::HeroProc,
            _ => return Err("expected `file` or `hero_proc`".into()),
        };
        Ok(())
    }),
    ("HERO_DEPLOYER_SECRETS_DIR", |c, v| {
        c.secrets.dir = Some(v.into());
        Ok(())
    }),
    ("HERO_DEPLOYER_BACKEND", |c, v| {
        c.provision.backend = v.into();
        Ok(())
    }),
    ("HERO_DEPLOYER_MAX_CONCURRENT_JOBS", |c, v| {
        c.provision.max_concurrent_jobs = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_LOCAL_ROOT", |c, v| {
        c.provision.local.root = Some(v.into());
        Ok(())
    }),
    ("HERO_DEPLOYER_LOCAL_BIN_DIR", |c, v| {
        c.provision.local.bin_dir = Some(v.into());
        Ok(())
    }),
    ("HERO_DEPLOYER_LOCAL_GATEWAY_LISTEN", |c, v| {
        c.provision.local.gateway_listen = v
            .parse()
            .map_err(|e| format!("not a socket address: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_GRIDPROXY_URL", |c, v| {
        c.provision.grid.gridproxy_url = Some(v.into());
        Ok(())
    }),
    ("HERO_DEPLOYER_GRID_TWIN_ID", |c, v| {
        c.provision.grid.twin_id = if v.is_empty() {
            None
        } else {
            Some(v.parse().map_err(|e| format!("not a twin id: {e}"))?)
        };
        Ok(())
    }),
    ("HERO_DEPLOYER_OPENTOFU_PROVIDER_VERSION", |c, v| {
        c.provision.opentofu.provider_version = (!v.is_empty()).then(|| v.into());
        Ok(())
    }),
    ("HERO_DEPLOYER_HEALTH_INTERVAL_SECS", |c, v| {
        c.health.interval_secs = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_HEALTH_JITTER_SECS", |c, v| {
        c.health.jitter_secs = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_HEALTH_CONCURRENCY", |c, v| {
        c.health.concurrency = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_HEALTH_PROBE_DEADLINE_MS", |c, v| {
        c.health.probe_deadline_ms = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_EXPIRY_DEFAULT_DAYS", |c, v| {
        c.provision.expiry.default_days = v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_EXPIRY_WARN_BEFORE_HOURS", |c, v| {
        c.provision.expiry.warn_before_hours =
            v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_EXPIRY_CHECK_INTERVAL_SECS", |c, v| {
        c.provision.expiry.check_interval_secs =
            v.parse().map_err(|e| format!("not a number: {e}"))?;
        Ok(())
    }),
    ("HERO_DEPLOYER_TEST_CLOCK_OFFSET_FILE", |c, v| {
        c.provision.test_clock_offset_file = (!v.is_empty()).then(|| v.into());
        Ok(())
    }),
    ("HERO_DEPLOYER_TEST_CRASH_AT", |c, v| {
        c.provision.test_crash_at = (!v.is_empty()).then(|| v.into());
        Ok(())
    }),
    ("HERO_DEPLOYER_TEST_FAULTS_FILE", |c, v| {
        c.provision.test_faults_file = (!v.is_empty()).then(|| v.into());
        Ok(())
    }),
];

impl Config {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        for (name, value) in env {
            if name == "HERO_SOCKET_DIR" {
                config.socket_dir = value.into();
                continue;
            }
            if !name.starts_with("HERO_DEPLOYER_") || CLI_ONLY_ENV.contains(&name.as_str()) {
                continue;
            }
            let Some((_, set)) = ENV.iter().find(|(n, _)| *n == name) else {
                let known: Vec<&str> = ENV.iter().map(|(n, _)| *n).collect();
                return Err(ConfigError::Env {
                    name,
                    message: format!("unknown variable; known: {}", known.join(", ")),
                });
            };
            set(&mut config, &value).map_err(|message| ConfigError::Env {
                name: name.clone(),
                message,
            })?;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.socket_mode, 0o600 | 0o660) {
            return Err(ConfigError::Invalid(format!(
                "socket_mode must be 0o600 or 0o660, not {:o}",
                self.socket_mode
            )));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        if !(self.forge.url.starts_with("http://") || self.forge.url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "forge.url must start with http:// or https://, got {:?}",
                self.forge.url
            )));
        }
        if self.forge.attempts == 0 {
            return Err(ConfigError::Invalid(
                "forge.attempts must be at least 1".into(),
            ));
        }
        self.provision.validate().map_err(ConfigError::Invalid)?;
        self.health.validate().map_err(ConfigError::Invalid)?;
        // A relative path would mean something else for a server started from another
        // directory (`server start --detach`, a service manager): refused, not guessed.
        for (key, path) in [
            ("data_dir", Some(&self.data_dir)),
            ("socket_dir (HERO_SOCKET_DIR)", Some(&self.socket_dir)),
            ("secrets.dir", self.secrets.dir.as_ref()),
            (
                "forge.admin_token_file",
                self.forge.admin_token_file.as_ref(),
            ),
        ] {
            if let Some(path) = path.filter(|p| !p.is_absolute()) {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be an absolute path, got {:?}",
                    path.display().to_string()
                )));
            }
        }
        Ok(())
    }

    /// Files the configuration names that must exist before anything is created: checked at
    /// start, so a typo is reported before the data dir is made and not at the first job.
    pub fn check_prerequisites(&self) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(script) = &self.provision.bootstrap_script {
            if !script.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "provision.bootstrap_script {} is not a readable file",
                    script.display()
                )));
            }
        }
        if self.provision.backend == "local" {
            let sshd = &self.provision.local.sshd_bin;
            let executable = std::fs::metadata(sshd)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if !executable {
                return Err(ConfigError::Invalid(format!(
                    "provision.local.sshd_bin {} is not an executable file; the local backend runs an \
                     OpenSSH sshd per sandbox (install openssh-server, or set provision.local.sshd_bin)",
                    sshd.display()
                )));
            }
            // The default bootstrap starts the sandbox's SSO edge and cockpit from these.
            if self.provision.bootstrap_script.is_none() {
                let dir = self
                    .provision
                    .local
                    .bin_dir
                    .clone()
                    .unwrap_or_else(hero_os_tfgrid_deployer_backends::local::default_bin_dir);
                for bin in ["hero_proxy", "hero_cockpit_standin"] {
                    let p = dir.join(bin);
                    let executable = std::fs::metadata(&p)
                        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                        .unwrap_or(false);
                    if !executable {
                        return Err(ConfigError::Invalid(format!(
                            "{} is not an executable file; the local backend's sandboxes run this \
                             workspace's {bin} (build the workspace: cargo build --bins, or set \
                             provision.local.bin_dir)",
                            p.display()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// `<socket_dir>/hero_os_tfgrid_deployer/rpc.sock`
    pub fn rpc_socket(&self) -> PathBuf {
        self.socket_dir.join(SERVICE).join("rpc.sock")
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("state.db")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.secrets
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secrets"))
    }

    pub fn hero_proc_socket(&self) -> PathBuf {
        self.secrets
            .hero_proc_socket
            .clone()
            .unwrap_or_else(|| hero_secrets::HeroProcSecretStore::default_socket(&self.socket_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "data_dir = \"/tmp/x\"\n[forge]\nurl = \"http://127.0.0.1:1\"\nemail_domain = \"a.test\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("HERO_DEPLOYER_FORGE_URL", "http://127.0.0.1:2"),
                ("HERO_SOCKET_DIR", "/s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.forge.url, "http://127.0.0.1:2");
        assert_eq!(c.forge.email_domain, "a.test");
        assert_eq!(
            c.rpc_socket(),
            PathBuf::from("/s/hero_os_tfgrid_deployer/rpc.sock")
        );
    }

    #[test]
    fn unknown_keys_and_variables_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[forge]\nulr = \"x\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("ulr"), "{err}");
        let err = Config::load(None, env(&[("HERO_DEPLOYER_FORGE_ULR", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HERO_DEPLOYER_FORGE_ULR") && err.contains("unknown"),
            "{err}"
        );
        let err = Config::load(None, env(&[("HERO_DEPLOYER_TCP_LISTEN", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("socket address"), "{err}");
    }

    /// Refused when the server starts, not at the first grid job or deploy minutes later.
    #[test]
    fn a_mistyped_grid_network_or_an_expiry_past_the_bound_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        for (text, says) in [
            (
                "[provision.grid]\nnetwork = \"mian\"\n",
                "provision.grid.network",
            ),
            ("[provision.expiry]\ndefault_days = 4000\n", "at most 3650"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        for ok in ["main", "test", "qa", "dev"] {
            std::fs::write(&file, format!("[provision.grid]\nnetwork = \"{ok}\"\n")).unwrap();
            Config::load(Some(&file), env(&[])).unwrap();
        }
    }

    #[test]
    fn the_clis_variable_is_ignored_not_rejected() {
        let c = Config::load(
            None,
            env(&[("HERO_DEPLOYER_ENDPOINT", "http://127.0.0.1:1")]),
        )
        .unwrap();
        assert_eq!(c.forge.url, DEFAULT_FORGE_URL);
    }

    #[test]
    fn relative_paths_are_refused_with_the_key_named() {
        for (var, key) in [
            ("HERO_DEPLOYER_DATA_DIR", "data_dir"),
            ("HERO_SOCKET_DIR", "socket_dir"),
            ("HERO_DEPLOYER_SECRETS_DIR", "secrets.dir"),
            (
                "HERO_DEPLOYER_FORGE_ADMIN_TOKEN_FILE",
                "forge.admin_token_file",
            ),
        ] {
            for value in ["data", "./data", "../x", "~/x"] {
                let err = Config::load(None, env(&[(var, value)]))
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(key) && err.contains("absolute"),
                    "{var}={value}: {err}"
                );
            }
        }
    }

    #[test]
    fn missing_prerequisites_are_named_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.sh");
        let mut c = Config::load(None, env(&[])).unwrap();
        c.provision.bootstrap_script = Some(missing.clone());
        let err = c.check_prerequisites().unwrap_err().to_string();
        assert!(
            err.contains("bootstrap_script") && err.contains("nope.sh"),
            "{err}"
        );
        c.provision.bootstrap_script = None;
        let not_executable = dir.path().join("sshd");
        std::fs::write(&not_executable, "").unwrap();
        for sshd in [
            dir.path().join("no-sshd"),
            not_executable,
            dir.path().to_path_buf(),
        ] {
            c.provision.local.sshd_bin = sshd.clone();
            let err = c.check_prerequisites().unwrap_err().to_string();
            assert!(
                err.contains("sshd_bin") && err.contains("executable"),
                "{err}"
            );
        }
    }

    #[test]
    fn grid_twin_and_provider_version_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[provision.grid]\ntwin_id = 7\n[provision.opentofu]\nprovider_version = \"1.11.2\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.provision.grid.twin_id, Some(7));
        assert_eq!(
            c.provision.opentofu.provider_version.as_deref(),
            Some("1.11.2")
        );
        let c = Config::load(
            Some(&file),
            env(&[
                ("HERO_DEPLOYER_GRID_TWIN_ID", "42"),
                ("HERO_DEPLOYER_OPENTOFU_PROVIDER_VERSION", "1.11.2-rc1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.provision.grid.twin_id, Some(42));
        assert_eq!(
            c.provision.opentofu.provider_version.as_deref(),
            Some("1.11.2-rc1")
        );
        let err = Config::load(None, env(&[("HERO_DEPLOYER_GRID_TWIN_ID", "-1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("twin id"), "{err}");
        std::fs::write(&file, "[provision.grid]\ntwin = 7\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("twin"), "{err}");
        std::fs::write(&file, "[provision.opentofu]\nprovider = \"1\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("provider"), "{err}");
    }

    #[test]
    fn health_watch_from_file_and_env_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[health]\ninterval_secs = 30\njitter_secs = 5\nconcurrency = 8\nprobe_deadline_ms = 2000\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(
            (
                c.health.interval_secs,
                c.health.jitter_secs,
                c.health.concurrency,
                c.health.probe_deadline_ms
            ),
            (30, 5, 8, 2000)
        );
        let c = Config::load(
            Some(&file),
            env(&[
                ("HERO_DEPLOYER_HEALTH_INTERVAL_SECS", "0"),
                ("HERO_DEPLOYER_HEALTH_CONCURRENCY", "2"),
                ("HERO_DEPLOYER_HEALTH_PROBE_DEADLINE_MS", "500"),
                ("HERO_DEPLOYER_HEALTH_JITTER_SECS", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (
                c.health.interval_secs,
                c.health.jitter_secs,
                c.health.concurrency,
                c.health.probe_deadline_ms
            ),
            (0, 1, 2, 500)
        );
        let err = Config::load(None, env(&[("HERO_DEPLOYER_HEALTH_CONCURRENCY", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("health.concurrency"), "{err}");
        std::fs::write(&file, "[provision.expiry]\ndefault_days = 3\n").unwrap();
        assert_eq!(
            Config::load(Some(&file), env(&[]))
                .unwrap()
                .provision
                .expiry
                .default_days,
            3
        );
        let c = Config::load(
            Some(&file),
            env(&[
                ("HERO_DEPLOYER_EXPIRY_DEFAULT_DAYS", "0"),
                ("HERO_DEPLOYER_EXPIRY_WARN_BEFORE_HOURS", "5"),
                ("HERO_DEPLOYER_EXPIRY_CHECK_INTERVAL_SECS", "9"),
            ]),
        )
        .unwrap();
        let e = &c.provision.expiry;
        assert_eq!(
            (e.default_days, e.warn_before_hours, e.check_interval_secs),
            (0, 5, 9)
        );
        std::fs::write(&file, "[provision.expiry]\ndefault_day = 3\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("default_day"), "{err}");
        std::fs::write(&file, "[health]\nintervall_secs = 7\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("intervall_secs"), "{err}");
    }
}
