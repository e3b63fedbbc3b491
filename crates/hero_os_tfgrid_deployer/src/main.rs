//! `hero_os_tfgrid_deployer`: the operator's command line. Built only on the SDK: everything it
//! does, a script or the dashboard can do through the same RPC methods.

mod cmd_batch;
mod cmd_demo;
mod cmd_invite;
mod cmd_job;
mod cmd_secret;
mod cmd_server;
mod cmd_user;
mod cmd_vm;
mod demo_edge;
mod output;
mod people_csv;
mod progress;
mod ssh;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hero_os_tfgrid_deployer_sdk::{Client, Endpoint};

/// Hands out personal Hero OS demo machines on the ThreeFold Grid, gated by Forge single sign-on.
///
/// Start the server once (`server start`), store the Forge admin token (`secret set
/// deployer/forge_admin_token < token.txt`), then `user create <name>`.
#[derive(Parser)]
#[command(name = "hero_os_tfgrid_deployer", version, propagate_version = true)]
struct Cli {
    /// The deployer server: unix:/path/rpc.sock, a socket path, http://host:port or host:port
    /// (the same syntax as the dashboard's --server).
    /// Default: $HERO_SOCKET_DIR/hero_os_tfgrid_deployer/rpc.sock (HERO_SOCKET_DIR defaults to ~/hero/var/sockets).
    #[arg(long, global = true, env = "HERO_DEPLOYER_ENDPOINT")]
    server: Option<String>,
    /// Print machine-readable JSON on stdout instead of tables, errors included
    /// (`{"kind": …, "message": …}`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start or stop the server, or check that it runs.
    #[command(subcommand)]
    Server(cmd_server::ServerCmd),
    /// Create, inspect and remove users (Forge accounts the deployer manages).
    #[command(subcommand)]
    User(cmd_user::UserCmd),
    /// Manage secrets in the server's secret store (values come from stdin or a file, never arguments).
    #[command(subcommand)]
    Secret(cmd_secret::SecretCmd),
    /// Read the audit log, newest first.
    Events(cmd_user::EventsArgs),
    /// Deploy, delete and inspect users' VMs.
    #[command(subcommand)]
    Vm(cmd_vm::VmCmd),
    /// List, follow, cancel and retry provisioning jobs.
    #[command(subcommand)]
    Job(cmd_job::JobCmd),
    /// Compare the backend's resources with the deployer's records; --fix removes orphans.
    Reconcile {
        /// Remove the orphans found (destructive: asks first, or pass --yes).
        #[arg(long)]
        fix: bool,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Bring up everything locally (dev Forge, server, local backend) and provision a demo user.
    Demo(cmd_demo::DemoArgs),
}

/// The default socket, per the Hero conventions.
pub fn default_socket() -> PathBuf {
    let dir = std::env::var_os("HERO_SOCKET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join("hero/var/sockets")
        });
    dir.join("hero_os_tfgrid_deployer/rpc.sock")
}

fn main() {
    let wants_json = std::env::args().skip(1).any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version are "errors" to clap; a usage error with --json is still JSON on
        // stdout (its first line as the message), without it clap's multi-line text, exit 2.
        Err(e) if wants_json && e.use_stderr() => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("usage error");
            let message = first.strip_prefix("error: ").unwrap_or(first);
            println!(
                "{:#}",
                serde_json::json!({ "kind": "usage", "message": message })
            );
            std::process::exit(2)
        }
        Err(e) => e.exit(),
    };
    let out = output::Output { json: cli.json };
    let endpoint = match cli.server.as_deref().map(Endpoint::from_arg) {
        Some(Ok(e)) => e,
        Some(Err(reason)) => output::fail(
            &out,
            &output::CliError::new("invalid_endpoint", format!("--server: {reason}")).into(),
        ),
        None => Endpoint::Unix(default_socket()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => output::fail(
            &out,
            &anyhow::anyhow!("cannot start the async runtime: {e}"),
        ),
    };
    let result = runtime.block_on(async {
        let client = Client::new(endpoint.clone());
        match cli.command {
            Command::Server(cmd) => cmd_server::run(cmd, &client, &out).await,
            Command::User(cmd) => cmd_user::run(cmd, &client, &out).await,
            Command::Secret(cmd) => cmd_secret::run(cmd, &client, &out).await,
            Command::Events(args) => cmd_user::events(args, &client, &out).await,
            Command::Vm(cmd) => cmd_vm::run(cmd, &client, &out).await,
            Command::Job(cmd) => cmd_job::run(cmd, &client, &out).await,
            Command::Reconcile { fix, yes } => cmd_vm::reconcile(fix, yes, &client, &out).await,
            Command::Demo(args) => cmd_demo::run(args, &out).await,
        }
    });
    if let Err(e) = result {
        output::fail(&out, &e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument and option of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "hero_os_tfgrid_deployer", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
