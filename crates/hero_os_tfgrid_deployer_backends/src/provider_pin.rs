//! The exact `threefoldtech/grid` provider version every working dir pins, and the rule that
//! matches its release channel to the grid network.
//!
//! Unpinned, `tofu init` takes whatever is newest on that day and each user's working dir locks
//! what it first got, so users drift onto different providers; and v1.11.1 (the last stable
//! release before the renames) reads `mnemonics` / `disk_name` where the generated config says
//! `mnemonic` / `name`. Why the defaults below fit is written down in `docs/provisioning.md`
//! ("Provider version").
//!
//! Release channels (the provider's release practice): `X.Y.Z` for main, `X.Y.Z-rcN` for test,
//! `X.Y.Z-qa` for qa, `X.Y.Z-dev` for dev. Each channel is built against that network's TFChain
//! and grid client, so a mismatch is refused here rather than discovered at apply time. Test also
//! accepts a stable release: no 1.11.x release candidate was ever published (the registry lists
//! `1.11.2-dev`, `1.11.2-qa`, `1.11.2`, `1.11.3`), stable builds are promoted after test, and the
//! newest `-rc` (`1.10.0-rc1`) predates the renames.

use std::fmt;

use crate::gridproxy::Network;

/// A release channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `X.Y.Z`.
    Stable,
    /// `X.Y.Z-rcN`.
    Rc,
    /// `X.Y.Z-qa`.
    Qa,
    /// `X.Y.Z-dev`.
    Dev,
}

/// An exact provider version such as `1.11.2` or `1.11.2-qa`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderVersion {
    text: String,
    channel: Channel,
}

impl fmt::Display for ProviderVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The default version per network: the 1.11.2 line, the first with `mnemonic` (env
/// `MNEMONIC`) and mounts keyed `name`, whose schema the vendored extraction matches for every
/// attribute the config uses (checked by diffing `internal/provider` from `v1.11.2-dev` to
/// `b7d1a8c7`: descriptions and the zos-light implementation only).
pub fn default_version(network: Network) -> ProviderVersion {
    let text = match network {
        Network::Main | Network::Test => "1.11.2",
        Network::Qa => "1.11.2-qa",
        Network::Dev => "1.11.2-dev",
    };
    // Infallible for these literals; fall back to a stable channel if the parser ever disagrees.
    ProviderVersion::parse(text).unwrap_or(ProviderVersion {
        text: text.to_string(),
        channel: Channel::Stable,
    })
}

impl ProviderVersion {
    /// Parse `X.Y.Z`, `X.Y.Z-rcN`, `X.Y.Z-qa` or `X.Y.Z-dev` (a leading `v` is accepted and dropped).
    /// Ranges, `~>`, and anything else are refused: the pin must be exact.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let (core, suffix) = match t.split_once('-') {
            Some((c, s)) => (c, Some(s)),
            None => (t, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if parts.len() != 3 || !parts.iter().all(numeric) {
            return Err(format!(
                "provider version {s:?} is not an exact X.Y.Z[-rcN|-qa|-dev] version"
            ));
        }
        let channel = match suffix {
            None => Channel::Stable,
            Some("qa") => Channel::Qa,
            Some("dev") => Channel::Dev,
            Some(rc) if rc.strip_prefix("rc").is_some_and(|n| numeric(&n)) => Channel::Rc,
            Some(other) => {
                return Err(format!(
                    "provider version {s:?} has suffix {other:?}; expected -rcN, -qa or -dev"
                ))
            }
        };
        Ok(Self {
            text: t.to_string(),
            channel,
        })
    }

    /// Parse the `required_providers` constraint this crate writes: `= X.Y.Z[-suffix]`.
    pub fn from_constraint(s: &str) -> Result<Self, String> {
        let rest = s
            .trim()
            .strip_prefix('=')
            .ok_or_else(|| format!("{s:?} is not an exact constraint \"= X.Y.Z\""))?;
        Self::parse(rest)
    }

    /// Its release channel.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// The exact constraint for `required_providers`.
    pub fn constraint(&self) -> String {
        format!("= {}", self.text)
    }

    /// Refuse a version whose channel does not belong to `network`.
    pub fn check_network(&self, network: Network) -> Result<(), String> {
        let ok = match network {
            Network::Main => self.channel == Channel::Stable,
            Network::Test => matches!(self.channel, Channel::Rc | Channel::Stable),
            Network::Qa => self.channel == Channel::Qa,
            Network::Dev => self.channel == Channel::Dev,
        };
        if ok {
            return Ok(());
        }
        let want = match network {
            Network::Main => "a stable X.Y.Z release",
            Network::Test => "an X.Y.Z-rcN or stable X.Y.Z release",
            Network::Qa => "an X.Y.Z-qa release",
            Network::Dev => "an X.Y.Z-dev release",
        };
        Err(format!(
            "provider version {} is a {:?} build, but the {network} network needs {want} (default for {network}: {})",
            self.text,
            self.channel,
            default_version(network)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_versions_only() {
        for (s, ch) in [
            ("1.11.2", Channel::Stable),
            ("v1.11.2", Channel::Stable),
            ("1.9.3-rc3", Channel::Rc),
            ("1.11.2-qa", Channel::Qa),
            ("1.11.2-dev", Channel::Dev),
        ] {
            assert_eq!(ProviderVersion::parse(s).unwrap().channel(), ch, "{s}");
        }
        for bad in [
            "",
            "1.11",
            "~> 1.11",
            ">= 1.11.2",
            "1.11.x",
            "1.11.2-beta",
            "1.11.2-rc",
            "1..2",
        ] {
            assert!(ProviderVersion::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ProviderVersion::from_constraint("= 1.11.2")
                .unwrap()
                .to_string(),
            "1.11.2"
        );
        assert!(ProviderVersion::from_constraint("1.11.2").is_err());
    }

    #[test]
    fn channel_matches_network() {
        for n in [Network::Main, Network::Test, Network::Qa, Network::Dev] {
            assert!(default_version(n).check_network(n).is_ok(), "{n}");
        }
        let dev = ProviderVersion::parse("1.11.2-dev").unwrap();
        let e = dev.check_network(Network::Main).unwrap_err();
        assert!(e.contains("main") && e.contains("1.11.2-dev"), "{e}");
        assert!(ProviderVersion::parse("1.11.2-rc1")
            .unwrap()
            .check_network(Network::Main)
            .is_err());
        assert!(ProviderVersion::parse("1.11.2-qa")
            .unwrap()
            .check_network(Network::Test)
            .is_err());
        assert!(ProviderVersion::parse("1.11.2-rc1")
            .unwrap()
            .check_network(Network::Test)
            .is_ok());
    }
}
