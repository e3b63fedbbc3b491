//! `user …` and `events`.

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
        /// Allow a `deployer_test_` name: throw-away users of end-to-end runs against a real Forge.
        #[arg(long)]
        test_user: bool,
    },
    /// Show one user (by username or numeric user id).
    Get {
        /// Username or numeric user id.
        user: String,
    },
    /// List users in username order.
    List {
        /// Only usernames starting with this prefix.
        #[arg(long)]
        filter: Option<String>,
        /// Page size (1..500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this cursor (printed as `more: --cursor …` under a page).
        #[arg(long)]
        cursor: Option<String>,
        /// Fetch every page.
        #[arg(long)]
        all: bool,
        /// Only users whose VM expires within this many days (from now).
        #[arg(long, value_name = "DAYS")]
        expiring_within_days: Option<u32>,
    },
    /// Forget a user and their secrets (the Forge account is kept). Refused while they have a VM.
    Delete {
        /// Username or numeric user id.
        user: String,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Show the initial Forge password again, to deliver it out of band. Audited.
    RevealPassword {
        /// Username or numeric user id.
        user: String,
    },
    /// Give the user's Forge account a new random password (Forge admin API) and show it once.
    /// For an adopted account or one whose password was lost. Audited.
    ResetPassword {
        /// Username or numeric user id.
        user: String,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Args)]
pub struct EventsArgs {
    /// Only events by this actor (e.g. a Forge username or local:operator).
    #[arg(long)]
    actor: Option<String>,
    /// Only events about this user (username or id; exactly this one: `ann` is not `anna`).
    #[arg(long)]
    user: Option<String>,
    /// Only actions starting with this (e.g. user. or vm.).
    #[arg(long)]
    action: Option<String>,
    /// Page size (1..500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only events older than this event id (printed as `more: --before …` under a page).
    #[arg(long)]
    before: Option<i64>,
}

/// A user named by id or username. Digits are an id: usernames of digits only are refused
/// (`username::validate`), so for any user made by this version the two cannot meet. A user named
/// so before that rule (adopted, or made by an older version) would make `42` mean two people, and
/// a `user delete 42 --yes` act on the wrong one: then the answer is an error naming both, never a
/// guess.
pub async fn resolve(client: &Client, user: &str) -> anyhow::Result<User> {
    let Ok(id) = user.parse::<UserId>() else {
        return Ok(client.find_user(user).await?);
    };
    let by_id = client.get_user(id).await;
    let by_name = client.find_user(user).await.ok();
    match (by_id, by_name) {
        (Ok(u), Some(named)) if named.user_id != u.user_id => anyhow::bail!(
            "{user:?} is both user id {id} ({}) and the username of user id {}; name that user by its id",
            u.forge_username,
            named.user_id
        ),
        (Ok(u), _) => Ok(u),
        (Err(_), Some(named)) => Ok(named),
        (Err(e), None) => Err(e.into()),
    }
}

fn user_fields(u: &User) -> Vec<(&'static str, String)> {
    let (account, forge_id) = match u.forge_account() {
        Some((how, id)) => (how.to_owned(), id.to_string()),
        None => (
            "not settled yet (setup incomplete)".to_owned(),
            "-".to_owned(),
        ),
    };
    vec![
        ("user_id", u.user_id.to_string()),
        ("username", u.forge_username.clone()),
        ("display name", u.display_name.clone().unwrap_or_default()),
        ("email", u.email.clone()),
        ("forge id", forge_id),
        ("forge account", account),
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

/// `user create`'s report. Says the *account* is ready — the VM is a separate step, and the line
/// says which command makes it.
fn print_created(r: &CreateUserResult) {
    println!(
        "Forge account {} is ready (user_id {}). No VM yet: `hero_os_tfgrid_deployer vm deploy {}`.",
        r.forge_username, r.user_id, r.forge_username
    );
    println!();
    let mut pairs = vec![("Forge login", r.forge_username.clone())];
    match &r.initial_password {
        Some(p) => pairs.push(("Initial password", p.clone())),
        None => pairs.push((
            "Initial password",
            "not known (the account existed before and was adopted)".into(),
        )),
    }
    pairs.push((
        "Forge API token",
        if r.forge_token_set {
            "stored in the secret store".to_owned()
        } else {
            format!(
                "none: {}",
                r.forge_token_note.as_deref().unwrap_or("not minted")
            )
        },
    ));
    print!("{}", output::fields_text(&pairs, "  "));
    if r.initial_password.is_some() {
        println!();
        println!("Deliver the password out of band (e.g. a direct chat message), never by email.");
        println!(
            "It can be shown again with `hero_os_tfgrid_deployer user reveal-password {}`.",
            r.forge_username
        );
    }
}

pub async fn run(cmd: UserCmd, client: &Client, out: &Output) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Create {
            from_file: Some(path),
            test_user,
            ..
        } => return crate::cmd_batch::create_from_file(&path, test_user, client, out).await,
        UserCmd::Create {
            username,
            display_name,
            email,
            test_user,
            ..
        } => {
            let username = username.unwrap_or_default();
            // The rules first, before any network call, refused as the server would refuse them (same
            // kind, message and rule), which checks them again.
            if let Err(e) = hero_os_tfgrid_deployer_sdk::username::validate(&username) {
                use hero_os_tfgrid_deployer_sdk::error::{ErrorKind, RpcError};
                let refusal = RpcError::new(ErrorKind::InvalidUsername, e.to_string())
                    .with_detail(serde_json::json!({ "rule": e.rule() }));
                return Err(hero_os_tfgrid_deployer_sdk::ClientError::Rpc(refusal).into());
            }
            // The test prefix is for end-to-end runs; an operator typing it by accident would
            // hand a person a throw-away account, so it takes a flag.
            if hero_os_tfgrid_deployer_sdk::username::is_test_user(&username) && !test_user {
                return Err(output::CliError::new(
                    "test_user",
                    format!(
                        "{username} starts with {}, the prefix of throw-away end-to-end test users; pass --test-user if that is what you want",
                        hero_os_tfgrid_deployer_sdk::username::TEST_PREFIX
                    ),
                )
                .into());
            }
            let r = match client
                .create_user(&username, display_name.as_deref(), email.as_deref())
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // `already_exists` carries the record: show it (the README promises it),
                    // then fail with the kind so scripts still see the error.
                    if let (false, Some(user)) = (out.json, existing_record(&e)) {
                        println!("User {} already exists:", user.forge_username);
                        output::fields(&user_fields(&user));
                    }
                    return Err(e.into());
                }
            };
            out.show(&r, print_created);
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
            expiring_within_days,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let mut params = ListUsersParams {
                filter,
                cursor,
                limit: Some(limit),
                before: None,
                expires_before: expiring_within_days.map(|d| now + i64::from(d) * 86_400),
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
                            u.vm_health
                                .map(|h| h.as_str().to_owned())
                                .unwrap_or_else(|| "-".into()),
                            match u.vm_status {
                                VmStatus::NoVm | VmStatus::Decommissioned => "-".into(),
                                _ => output::expiry(u.vm_expires_at),
                            },
                            if u.forge_token_set { "yes" } else { "no" }.to_owned(),
                            output::time(u.created_at),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "id", "username", "vm", "health", "expires", "token", "created",
                    ],
                    &rows,
                );
                println!("{} of {} user(s)", p.users.len(), p.total);
                if let Some(c) = &p.next_cursor {
                    output::more("--cursor", c);
                }
            });
        }
        UserCmd::Delete { user, yes } => {
            let u = resolve(client, &user).await?;
            output::confirm(
                &format!(
                    "Forget user {} (id {}) and delete their secrets? The Forge account is kept.",
                    u.forge_username, u.user_id
                ),
                yes,
            )?;
            let r = client.delete_user(u.user_id).await?;
            out.show(&r, |r| {
                println!(
                    "Deleted user {} from the deployer; the Forge account is kept.",
                    r.forge_username
                )
            });
        }
        UserCmd::ResetPassword { user, yes } => {
            let u = resolve(client, &user).await?;
            output::confirm(
                &format!(
                    "Set a new Forge password for {}? The current one stops working.",
                    u.forge_username
                ),
                yes,
            )?;
            let r = client.reset_forge_password(u.user_id).await?;
            out.show(&r, |r| {
                println!("New Forge password for {} (shown once):", r.forge_username);
                println!();
                print!(
                    "{}",
                    output::fields_text(
                        &[
                            ("Forge login", r.forge_username.clone()),
                            ("New password", r.new_password.clone()),
                        ],
                        "  "
                    )
                );
                println!();
                println!("Deliver it out of band, never by email; `user reveal-password {}` shows it again (audited).", r.forge_username);
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

/// The record an `already_exists` error carries, if it is one.
fn existing_record(e: &hero_os_tfgrid_deployer_sdk::ClientError) -> Option<User> {
    match e {
        hero_os_tfgrid_deployer_sdk::ClientError::Rpc(rpc)
            if rpc.kind() == Some(hero_os_tfgrid_deployer_sdk::ErrorKind::AlreadyExists) =>
        {
            let detail = rpc.data.as_ref()?.detail.clone()?;
            serde_json::from_value(detail).ok()
        }
        _ => None,
    }
}

pub async fn events(args: EventsArgs, client: &Client, out: &Output) -> anyhow::Result<()> {
    // An id is the user's name in the log; a name is taken as given (a forgotten user's events stay).
    let user = match args.user {
        Some(u) if u.parse::<UserId>().is_ok() => Some(resolve(client, &u).await?.forge_username),
        other => other,
    };
    let page = client
        .list_events(&ListEventsParams {
            actor: args.actor,
            subject: None,
            user,
            action: args.action,
            before: args.before,
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
        if let Some(b) = p.next_before {
            output::more("--before", b);
        }
    });
    Ok(())
}
