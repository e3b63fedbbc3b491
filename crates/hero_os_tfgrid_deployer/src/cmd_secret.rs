//! `secret …`: values are read from stdin or a file and never printed unless `--show`, so they
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
        /// Read the value from this file instead of stdin (trailing newlines are dropped).
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Read a secret: says whether it is set, and reveals the value only with --show.
    Get {
        /// Slot, e.g. deployer/forge_admin_token.
        slot: String,
        /// Print the value itself (audited like every read).
        #[arg(long)]
        show: bool,
    },
    /// List slot names (never values).
    List {
        /// Only slots starting with this, e.g. deployer/users/.
        prefix: Option<String>,
    },
    /// Delete a secret.
    Delete {
        /// Slot, e.g. deployer/tfgrid_mnemonic.
        slot: String,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// What `secret get` prints without `--show`: that the slot holds a value, nothing about the
/// value (not a prefix, not the length: both narrow a guess and show up in screen recordings).
const MASKED: &str = "******** (set; --show reveals it)";

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
                r.value = MASKED.to_owned();
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
        SecretCmd::Delete { slot, yes } => {
            crate::output::confirm(&format!("Delete the secret {slot}?"), yes)?;
            let r = client
                .call::<methods::SecretDelete>(&SecretSlotParams { slot: slot.clone() })
                .await?;
            out.show(&r, |_| println!("deleted {slot}"));
        }
    }
    Ok(())
}
