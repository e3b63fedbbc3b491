//! The per-user Hero OS manifest (`~driver/hero/cfg/cockpit/services.toml`): which services the
//! cockpit starts, from a named profile, with the user's name and public URL.
//!
//! Profiles are data (name → list of services) so operators can add one without a release; the
//! default profile `demo` is proxy, router, proc, cockpit, embedder-small, db, books. Rendering is
//! deterministic (golden-tested) and uses the `toml` serializer so names and URLs are escaped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Name of the default profile.
pub const DEFAULT_PROFILE: &str = "demo";

/// The services of the default `demo` profile, in start order.
pub const DEMO_SERVICES: [&str; 7] = [
    "proxy",
    "router",
    "proc",
    "cockpit",
    "embedder-small",
    "db",
    "books",
];

/// Named service profiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profiles {
    /// Profile name → services in start order.
    pub profiles: BTreeMap<String, Vec<String>>,
}

impl Default for Profiles {
    /// Just `demo`.
    fn default() -> Self {
        let mut profiles = BTreeMap::new();
        profiles.insert(
            DEFAULT_PROFILE.to_string(),
            DEMO_SERVICES.iter().map(|s| s.to_string()).collect(),
        );
        Self { profiles }
    }
}

/// Errors of manifest rendering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// No such profile.
    #[error("unknown service profile {name:?}; known: {}", known.join(", "))]
    UnknownProfile {
        /// Asked for.
        name: String,
        /// Configured profiles.
        known: Vec<String>,
    },
    /// A service name that is not `[a-z0-9-_]+`, or a duplicate.
    #[error("invalid service {service:?} in profile {profile:?}: {why}")]
    InvalidService {
        /// Profile.
        profile: String,
        /// Service.
        service: String,
        /// Why.
        why: String,
    },
    /// Serialization failed.
    #[error("cannot render services.toml: {0}")]
    Render(String),
}

impl ManifestError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::UnknownProfile { .. } => "manifest.unknown_profile",
            ManifestError::InvalidService { .. } => "manifest.invalid_service",
            ManifestError::Render(_) => "manifest.render",
        }
    }
}

/// Who the manifest is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestUser {
    /// The username (Forge login).
    pub username: String,
    /// The public URL of the user's Hero OS.
    pub url: String,
}

#[derive(Serialize)]
struct Doc<'a> {
    user: UserSection<'a>,
    profile: ProfileSection<'a>,
    service: Vec<ServiceSection<'a>>,
}

#[derive(Serialize)]
struct UserSection<'a> {
    name: &'a str,
    url: &'a str,
}

#[derive(Serialize)]
struct ProfileSection<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct ServiceSection<'a> {
    name: &'a str,
    enabled: bool,
}

impl Profiles {
    /// Check every profile: services `[a-z0-9_-]+`, no duplicates, not empty.
    pub fn validate(&self) -> Result<(), ManifestError> {
        for (p, services) in &self.profiles {
            if services.is_empty() {
                return Err(ManifestError::InvalidService {
                    profile: p.clone(),
                    service: String::new(),
                    why: "the profile has no services".into(),
                });
            }
            let mut seen = std::collections::BTreeSet::new();
            for s in services {
                if s.is_empty()
                    || !s.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    })
                {
                    return Err(ManifestError::InvalidService {
                        profile: p.clone(),
                        service: s.clone(),
                        why: "service names are lowercase letters, digits, '-' and '_'".into(),
                    });
                }
                if !seen.insert(s) {
                    return Err(ManifestError::InvalidService {
                        profile: p.clone(),
                        service: s.clone(),
                        why: "listed twice".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Render `services.toml` for `user` from profile `profile`.
    pub fn render(&self, profile: &str, user: &ManifestUser) -> Result<String, ManifestError> {
        self.validate()?;
        let services = self
            .profiles
            .get(profile)
            .ok_or_else(|| ManifestError::UnknownProfile {
                name: profile.to_string(),
                known: self.profiles.keys().cloned().collect(),
            })?;
        let doc = Doc {
            user: UserSection {
                name: &user.username,
                url: &user.url,
            },
            profile: ProfileSection { name: profile },
            service: services
                .iter()
                .map(|s| ServiceSection {
                    name: s,
                    enabled: true,
                })
                .collect(),
        };
        let body = toml::to_string(&doc).map_err(|e| ManifestError::Render(e.to_string()))?;
        Ok(format!(
            "# Hero OS services of {}, profile \"{profile}\".\n\
             # Generated by hero_os_tfgrid_deployer: edits are overwritten on the next provision.\n\n{body}",
            user.username.replace('\n', " ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_profile_names_the_known_ones() {
        let err = Profiles::default()
            .render(
                "full",
                &ManifestUser {
                    username: "a".into(),
                    url: "u".into(),
                },
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown service profile \"full\"; known: demo"
        );
        assert_eq!(err.code(), "manifest.unknown_profile");
    }

    #[test]
    fn rejects_bad_services() {
        let mut p = Profiles::default();
        p.profiles
            .insert("x".into(), vec!["db".into(), "db".into()]);
        assert!(p.validate().is_err());
        p.profiles.insert("x".into(), vec!["Bad Name".into()]);
        assert!(p.validate().is_err());
    }
}
