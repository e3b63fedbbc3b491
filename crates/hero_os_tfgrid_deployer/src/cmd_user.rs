//! `user …` and `events`.

use anyhow::Context;
use clap::{Args, Subcommand};
use hero_os_tfgrid_deployer_sdk::types::*;
use hero_os_tfgrid_deployer_sdk::Client;

use crate::output::{self, Output};

#[derive(Subcommand)]
pub enum UserCmd {
    /// Make sure a Forge account exists for USERNAME (create it, or adopt an existing one) and
    /// hold its initial password and API token. Prints the initial password once.
    Create {
        /// Lowercase a-z, 0-9 and '-', at most 40 characters; it becomes <username>.<node domain>.
        #[arg(required_unless_present = "from_file")]
        username: Option<String>,
        /// Create everyone in a CSV file instead (header line, then `username,display_name,email`
        /// per line): good lines are created, each bad line is reported with its number and why.
        #[arg(long, value_name = "CSV", conflicts_with_all = ["username", "display_name", "email"])]
        from_file: Option<std::path::PathBuf>,
        /// Full name shown on Forge.
        #[arg(long)]
        display_name: Option<String>,
        /// Email for the Forge account (default <username>@nomail.demo.ourworld.tf).
        #[arg(long)]
        email: Option<String>,
    },
    /// Show one user (by username or numeric user id).
    Get { user: String },
    /// List users in username order.
    List {
        /// Only usernames starting with this prefix.
        #[arg(long)]
        filter: Option<String>,
        /// Page size (1..500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this cursor (printed at the end of a page).
        #[arg(long)]
        cursor: Option<String>,
        /// Fetch every page.
        #[arg(long)]
        all: bool,
    },
    /// Forget a user and their secrets (the Forge account is kept). Refused while they have a VM.
    Delete {
        user: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Show the initial Forge password again, to deliver it out of band. Audited.
    RevealPassword { user: String },
}

#[derive(Args)]
pub struct EventsArgs {
    /// Only events by this actor (e.g. a Forge username or local:operator).
    #[arg(long)]
    actor: Option<String>,
    /// Only events about this user.
    #[arg(long)]
    user: Option<String>,
    /// Only actions starting with this (e.g. user. or vm.).
    #[arg(long)]
    action: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

/// A user named by id or username.
pub async fn resolve(client: &Client, user: &str) -> anyhow::Result<User> {
    Ok(match user.parse::<UserId>() {
        Ok(id) => client.get_user(id).await?,
        Err(_) => client.find_user(user).await?,
    })
}

fn user_fields(u: &User) -> Vec<(&'static str, String)> {
    vec![
        ("user_id", u.user_id.to_string()),
        ("username", u.forge_username.clone()),
        ("display name", u.display_name.clone().unwrap_or_default()),
        ("email", u.email.clone()),
        ("forge id", u.forge_user_id.to_string()),
        (
            "forge account",
            if u.forge_created {
                "created by the deployer"
            } else {
                "adopted (existed before)"
            }
            .into(),
        ),
        (
            "forge token",
            if u.forge_token_set {
                "held".to_owned()
            } else {
                format!(
                    "not held: {}",
                    u.forge_token_note.as_deref().unwrap_or("unknown")
                )
            },
        ),
        (
            "initial password",
            if u.initial_password_held {
                "held"
            } else {
                "not held"
            }
            .into(),
        ),
        (
            "setup",
            if u.setup_complete {
                "complete"
            } else {
                "incomplete: run `user create` again to finish"
            }
            .into(),
        ),
        ("vm", u.vm_status.as_str().into()),
        ("created", output::time(u.created_at)),
    ]
}

pub async fn run(cmd: UserCmd, client: &Client, out: &Output) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Create {
            from_file: Some(path),
            ..
        } => return crate::cmd_batch::create_from_file(&path, client, out).await,
        UserCmd::Create {
            username,
            display_name,
            email,
            ..
        } => {
            let username = username.unwrap_or_default();
            let r = client
                .create_user(&username, display_name.as_deref(), email.as_deref())
                .await?;
            out.show(&r, |r| {
                println!("User {} is ready (user_id {}).", r.forge_username, r.user_id);
                match &r.initial_password {
                    Some(p) => {
                        println!();
                        println!("  Forge login     {}", r.forge_username);
                        println!("  Initial password {p}");
                        println!();
                        println!("Deliver the password out of band (e.g. a direct chat message), never by email.");
                        println!("It can be shown again with `hero_os_tfgrid_deployer user reveal-password {}`.", r.forge_username);
                    }
                    None => println!("The Forge account already existed: its password is not known to the deployer."),
                }
                if r.forge_token_set {
                    println!("A Forge API token for the user is stored in the secret store.");
                } else if let Some(note) = &r.forge_token_note {
                    println!("No Forge token: {note}.");
                }
            });
        }
        UserCmd::Get { user } => {
            let u = resolve(client, &user).await?;
            out.show(&u, |u| output::fields(&user_fields(u)));
        }
        UserCmd::List {
            filter,
            limit,
            cursor,
            all,
        } => {
            let mut params = ListUsersParams {
                filter,
                cursor,
                limit: Some(limit),
                before: None,
            };
            let mut users = Vec::new();
            let (next, total) = loop {
                let page = client.list_users(&params).await?;
                users.extend(page.users);
                match page.next_cursor {
                    Some(c) if all => params.cursor = Some(c),
                    next => break (next, page.total),
                }
            };
            let page = UsersPage {
                users,
                next_cursor: next,
                prev_cursor: None,
                total,
            };
            out.show(&page, |p| {
                let rows: Vec<Vec<String>> = p
                    .users
                    .iter()
                    .map(|u| {
                        vec![
                            u.user_id.to_string(),
                            u.forge_username.clone(),
                            u.vm_status.as_str().to_owned(),
                            if u.forge_token_set { "yes" } else { "no" }.to_owned(),
                            output::time(u.created_at),
                        ]
                    })
                    .collect();
                output::table(&["id", "username", "vm", "token", "created"], &rows);
                println!("{} of {} user(s)", p.users.len(), p.total);
                if let Some(c) = &p.next_cursor {
                    println!("more: --cursor {c}");
                }
            });
        }
        UserCmd::Delete { user, yes } => {
            let u = resolve(client, &user).await?;
            if !yes {
                confirm(&format!(
                    "Forget user {} (id {}) and delete their secrets? The Forge account is kept.",
                    u.forge_username, u.user_id
                ))?;
            }
            let r = client.delete_user(u.user_id).await?;
            out.show(&r, |r| {
                println!(
                    "Deleted user {} from the deployer; the Forge account is kept.",
                    r.forge_username
                )
            });
        }
        UserCmd::RevealPassword { user } => {
            let u = resolve(client, &user).await?;
            let r = client.reveal_initial_password(u.user_id).await?;
            out.show(&r, |r| println!("{}", r.initial_password));
        }
    }
    Ok(())
}

/// Asks on the terminal; refuses when stdin is not one (use --yes in scripts).
fn confirm(question: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} Refusing without a terminal; pass --yes to confirm");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush().context("stdout")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("stdin")?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("cancelled")
    }
}

pub async fn events(args: EventsArgs, client: &Client, out: &Output) -> anyhow::Result<()> {
    let page = client
        .list_events(&ListEventsParams {
            actor: args.actor,
            subject: args.user.map(|u| format!("user:{u}")),
            action: args.action,
            before: None,
            limit: Some(args.limit),
        })
        .await?;
    out.show(&page, |p| {
        let rows: Vec<Vec<String>> = p
            .events
            .iter()
            .map(|e| {
                vec![
                    output::time(e.at),
                    e.actor.clone(),
                    e.action.clone(),
                    e.subject.clone(),
                    e.outcome.clone(),
                    e.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(
            &["time", "actor", "action", "subject", "outcome", "detail"],
            &rows,
        );
    });
    Ok(())
}
