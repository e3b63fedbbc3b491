//! `vm invite <user>`: the ready-to-paste invitation for a ready VM (the words come from the
//! SDK's `invitation`, the same the dashboard shows). The message goes to stdout, so
//! `vm invite alice | wl-copy` copies exactly it; the reminder about the password goes to stderr.

use hero_os_tfgrid_deployer_sdk::invitation::invitation;
use hero_os_tfgrid_deployer_sdk::Client;

use crate::cmd_user::resolve;
use crate::output::Output;

pub async fn run(user: &str, client: &Client, out: &Output) -> anyhow::Result<()> {
    let u = resolve(client, user).await?;
    let (vm, info) = tokio::join!(client.get_vm(u.user_id), client.server_info());
    let (vm, info) = (vm?, info?);
    let inv = invitation(&u, vm.vm.as_ref(), &info.forge_url)?;
    out.show(&inv, |i| {
        print!("{}", i.message);
        eprintln!();
        eprintln!("URL: {}", i.url);
        eprintln!("{}", i.reminder);
    });
    Ok(())
}
