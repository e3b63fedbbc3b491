//! `secret …`: values are read from stdin or a file and printed masked unless `--show`, so they
//! never appear in argv, shell history or a screen recording by accident.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use hero_os_tfgrid_deployer_sdk::methods;
use hero_os_tfgrid_deployer_sdk::types::*;
use hero_os_tfgrid_deployer_sdk::Client;

use crate::output::Output;

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Store a secret. The value is read from stdin (one line or the whole input) or --from-file.
    Set {
        /// Slot, e.g. deployer/forge_admin_token.
        slot: String,
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Read a secret (masked unless --show).
    Get {
        slot: String,
        #[arg(long)]
        show: bool,
    },
    /// List slot names (never values).
    List { prefix: Option<String> },
    /// Delete a secret.
    Delete { slot: String },
}

/// `abcd…wxyz (32 chars)`, enough to recognise a value without revealing it.
fn mask(value: &str) -> String {
    let n = value.chars().count();
    if n <= 8 {
        format!("******** ({n} chars)")
    } else {
        let head: String = value.chars().take(2).collect();
        format!("{head}****** ({n} chars)")
    }
}

fn read_value(from_file: Option<PathBuf>) -> anyhow::Result<String> {
    let raw = match from_file {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("Enter the secret value, then press Enter and Ctrl-D:");
            }
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read stdin")?;
            s
        }
    };
    let value = raw.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        anyhow::bail!("empty secret value: give it on stdin or with --from-file");
    }
    Ok(value)
}

pub async fn run(cmd: SecretCmd, client: &Client, out: &Output) -> anyhow::Result<()> {
    match cmd {
        SecretCmd::Set { slot, from_file } => {
            let value = read_value(from_file)?;
            let r = client
                .call::<methods::SecretSet>(&SecretSetParams {
                    slot: slot.clone(),
                    value,
                })
                .await?;
            out.show(&r, |_| println!("stored {slot}"));
        }
        SecretCmd::Get { slot, show } => {
            let mut r = client
                .call::<methods::SecretGet>(&SecretSlotParams { slot })
                .await?;
            if !show {
                r.value = mask(&r.value);
            }
            out.show(&r, |r| println!("{}", r.value));
        }
        SecretCmd::List { prefix } => {
            let r = client
                .call::<methods::SecretList>(&SecretListParams { prefix })
                .await?;
            out.show(&r, |r| {
                for s in &r.slots {
                    println!("{s}");
                }
            });
        }
        SecretCmd::Delete { slot } => {
            let r = client
                .call::<methods::SecretDelete>(&SecretSlotParams { slot: slot.clone() })
                .await?;
            out.show(&r, |_| println!("deleted {slot}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_never_show_the_value() {
        let m = mask("4f1e9c0a5b7d3e2f1a0b9c8d7e6f5a4b3c2d1e0f");
        assert!(!m.contains("9c0a5b"));
        assert!(m.contains("40 chars"));
        assert_eq!(mask("abc"), "******** (3 chars)");
    }
}
