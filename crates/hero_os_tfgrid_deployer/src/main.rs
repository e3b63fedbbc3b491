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
mod output;
mod people_csv;
mod progress;

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
    /// Server endpoint: a unix socket path or http://host:port.
    /// Default: $HERO_SOCKET_DIR/hero_os_tfgrid_deployer/rpc.sock (HERO_SOCKET_DIR defaults to ~/hero/var/sockets).
    #[arg(long, global = true, env = "HERO_DEPLOYER_ENDPOINT")]
    server: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server or check that it runs.
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
        #[arg(long)]
        fix: bool,
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
    let cli = Cli::parse();
    let endpoint = cli
        .server
        .as_deref()
        .map(Endpoint::parse)
        .unwrap_or_else(|| Endpoint::Unix(default_socket()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => output::fail(&format!("cannot start the async runtime: {e}")),
    };
    let out = output::Output { json: cli.json };
    let result = runtime.block_on(async {
        let client = Client::new(endpoint.clone());
        match cli.command {
            Command::Server(cmd) => cmd_server::run(cmd, &client, &out).await,
            Command::User(cmd) => cmd_user::run(cmd, &client, &out).await,
            Command::Secret(cmd) => cmd_secret::run(cmd, &client, &out).await,
            Command::Events(args) => cmd_user::events(args, &client, &out).await,
            Command::Vm(cmd) => cmd_vm::run(cmd, &client, &out).await,
            Command::Job(cmd) => cmd_job::run(cmd, &client, &out).await,
            Command::Reconcile { fix } => cmd_vm::reconcile(fix, &client, &out).await,
            Command::Demo(args) => cmd_demo::run(args, &out).await,
        }
    });
    if let Err(e) = result {
        output::fail(&output::describe(&e));
    }
}
