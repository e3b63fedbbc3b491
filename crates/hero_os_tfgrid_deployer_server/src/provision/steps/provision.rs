//! Provision steps: `forge_user → ssh_key → select_node → deploy_vm → deploy_gateway → wait_ssh →
//! push_manifest → run_bootstrap → verify_health → finalize`.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::Mutex;

use hero_os_tfgrid_deployer_backends::node_selection::select_from_gridproxy;
use hero_os_tfgrid_deployer_backends::{
    GatewayRequest, GridProxyClient, Network, VmInfo, VmRequest, VmSpec,
};
use hero_os_tfgrid_deployer_sdk::jobs::{EventLevel, ProvisionResult};
use hero_os_tfgrid_deployer_sdk::types::CreateUserParams;
use rusqlite::params;

use super::{JobContext, Scope, StepError};
use crate::audit::Actor;
use crate::db::Cached;
use crate::error::ServiceError;
use crate::provision::agent::SshAccess;
use crate::provision::faults::BackendFault;
use crate::provision::sshkeys::PublicKeyFacts;
use crate::provision::{vms, DEPLOYER_VERSION};
use hero_os_tfgrid_deployer_backends::manifest::ManifestUser;

/// The Forge account must exist and the deployer must hold what it needs for it. A user record
/// left `pending` by an interrupted `create_user` is finished here.
pub async fn forge_user(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let d = s.p.deployer();
    // Our record and Forge are asked at once: Forge's answer is what this step is about, unless
    // an interrupted setup must be finished first (then it is asked again afterwards).
    let (user, on_forge) = tokio::join!(
        d.get_user(s.job.user_id),
        d.forge.user_exists(&s.job.forge_username)
    );
    let user = user?;
    // Known only when the account was complete already; a finished setup changes it.
    ctx.initial_password_held = user.setup_complete.then_some(user.initial_password_held);
    if !user.setup_complete {
        s.say("Forge account setup was interrupted earlier: finishing it");
        match d
            .create_user(
                &Actor(s.job.actor.clone()),
                CreateUserParams {
                    username: user.forge_username.clone(),
                    display_name: user.display_name.clone(),
                    email: Some(user.email.clone()),
                },
            )
            .await
        {
            Ok(r) => {
                return Ok(format!(
                    "Forge account {} ready ({})",
                    r.forge_username,
                    if r.adopted { "adopted" } else { "created" }
                ))
            }
            Err(ServiceError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let on_forge = if user.setup_complete {
        on_forge
    } else {
        // Asked before the setup was finished: ask again.
        d.forge.user_exists(&user.forge_username).await
    };
    match on_forge {
        Ok(Some(u)) => Ok(format!(
            "Forge account {} exists (forge id {}); token {}",
            u.login,
            u.id,
            if user.forge_token_set { "held" } else { "not held (adopted account)" }
        )),
        Ok(None) => Err(StepError::fatal(
            "forge.user_missing",
            format!(
                "Forge account {} no longer exists on {}; delete the deployer user and create it again",
                user.forge_username,
                d.forge.url()
            ),
        )),
        Err(e) => Err(ServiceError::from(e).into()),
    }
}

pub async fn ssh_key(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    if let (Some(_), Some(fingerprint)) = (&ctx.public_key, &ctx.key_fingerprint) {
        return Ok(format!(
            "existing ED25519 key {fingerprint} adopted (found when the job was created)"
        ));
    }
    let comment = format!("hero_u{}@hero_os_tfgrid_deployer", s.job.user_id);
    let (facts, created) = s.p.ensure_ssh_key(s.job.user_id, &comment).await?;
    ctx.key_fingerprint = Some(facts.fingerprint.clone());
    ctx.public_key = Some(facts.public_key.clone());
    Ok(if created {
        format!(
            "ED25519 key {} generated; private key sealed at rest",
            facts.fingerprint
        )
    } else {
        format!("existing ED25519 key {} adopted", facts.fingerprint)
    })
}

pub async fn select_node(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    if let Some(node) = s.options.node_id {
        ctx.node_id = Some(node);
        return Ok(format!(
            "node {node} pinned by the request; selection skipped"
        ));
    }
    if s.job.backend == "local" {
        return Ok(
            "local backend: sandboxes run on this machine, no grid node needed; selection skipped"
                .into(),
        );
    }
    if let (Some(node), Some(domain)) = (ctx.node_id, ctx.node_domain.as_ref()) {
        return Ok(format!(
            "node {node} ({domain}) chosen by an earlier attempt; kept"
        ));
    }
    let grid = &s.p.inner.cfg.grid;
    let client = match &grid.gridproxy_url {
        Some(url) => GridProxyClient::with_base_url(url.clone()),
        None => {
            let network = Network::from_str(&grid.network)
                .map_err(|e| StepError::fatal("config.network", format!("grid.network: {e}")))?;
            GridProxyClient::new(network)
        }
    }
    .map_err(|e| StepError::fatal(e.code(), e.to_string()))?;
    let need = ctx
        .spec
        .get_or_insert_with(VmSpec::default)
        .required_capacity();
    let selection = select_from_gridproxy(&client, &grid.candidate_nodes, &need).await?;
    for (node, why) in &selection.rejected {
        s.say(format!("node {node} not chosen: {why}"));
    }
    ctx.node_id = Some(selection.node.node_id);
    ctx.node_domain = Some(selection.domain.clone());
    Ok(selection.reason)
}

pub async fn deploy_vm(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let name = s.resource_name()?;
    let spec = ctx.spec.get_or_insert_with(VmSpec::default).clone();
    let key = match (&ctx.public_key, &ctx.key_fingerprint) {
        (Some(public_key), Some(fingerprint)) => PublicKeyFacts {
            public_key: public_key.clone(),
            fingerprint: fingerprint.clone(),
        },
        // A job from before the context carried the key.
        _ => s.p.public_key(s.job.user_id).await?.ok_or_else(|| {
            StepError::fatal(
                "ssh_key.missing",
                "the user has no SSH key (ssh_key step not done)",
            )
        })?,
    };
    let (user_id, job_id, node, fp, now) = (
        s.job.user_id,
        s.job.job_id,
        ctx.node_id,
        key.fingerprint.clone(),
        s.p.deployer().clock.now(),
    );
    let vm_id = match ctx.vm_id {
        // The row was written with the job (`provision_vm`), so it exists before anything here
        // acts; this job, its node and the key the VM trusts are facts of the step's outcome.
        Some(vm_id) => {
            s.write_later(move |conn| {
                conn.execute_cached(
                    "UPDATE vms SET job_id = ?2, node_id = COALESCE(?3, node_id), ssh_key_fingerprint = ?4, \
                     updated_at = ?5 WHERE vm_id = ?1",
                    params![vm_id, job_id, node, fp, now],
                )?;
                Ok(())
            });
            vm_id
        }
        // A job created before its VM row came with it (or retried after its row was
        // decommissioned): the row first, so whatever the backend makes from here on is
        // recorded and reconcile and decommission can always find it.
        None => {
            let (username, backend, name_s) = (
                s.job.forge_username.clone(),
                s.job.backend.clone(),
                name.to_string(),
            );
            let spec_json = serde_json::to_string(&spec).unwrap_or_else(|_| "{}".into());
            s.write(move |conn| -> Result<i64, ServiceError> {
                let live = vms::live_vm(conn, user_id)?;
                Ok(vms::record_planned(
                    conn,
                    live.as_ref(),
                    &vms::PlannedVm {
                        user_id,
                        forge_username: &username,
                        backend: &backend,
                        name: &name_s,
                        node_id: node,
                        spec_json: &spec_json,
                        job_id: Some(job_id),
                        ssh_key_fingerprint: Some(&fp),
                        now,
                    },
                )?)
            })
            .await?
        }
    };
    ctx.vm_id = Some(vm_id);
    s.p.inner.faults.arm_backend(BackendFault::DeployVm);
    let backend = s.backend()?;
    let info = backend
        .deploy_vm(
            &VmRequest {
                name: name.clone(),
                spec,
                ssh_public_key: key.public_key.clone(),
                node_id: ctx.node_id,
            },
            s.sink(),
        )
        .await?;
    record_vm_facts(s, vm_id, &info);
    let msg = format!(
        "VM {name} deployed on {} (ssh {}@{}:{}{})",
        info.backend,
        info.ssh.user,
        info.ssh.host,
        info.ssh.port,
        info.node_id
            .map(|n| format!(", node {n}"))
            .unwrap_or_default()
    );
    ctx.vm = Some(info);
    Ok(msg)
}

fn record_vm_facts(s: &Scope<'_>, vm_id: i64, info: &VmInfo) {
    let (private_ip, mycelium_ip, backend_id, node) = (
        info.private_ip.clone(),
        info.mycelium_ip.clone(),
        info.backend_id.clone(),
        info.node_id,
    );
    let now = s.p.deployer().clock.now();
    s.write_later(move |conn| {
        conn.execute_cached(
            "UPDATE vms SET private_ip = ?2, mycelium_ip = ?3, backend_id = ?4, node_id = COALESCE(?5, node_id), \
             updated_at = ?6 WHERE vm_id = ?1",
            params![vm_id, private_ip, mycelium_ip, backend_id, node, now],
        )?;
        Ok(())
    });
}

/// The VM as the backend sees it now (ports and IPs may change across restarts).
async fn current_vm(s: &Scope<'_>, ctx: &mut JobContext) -> Result<VmInfo, StepError> {
    let name = s.resource_name()?;
    match s.backend()?.get_vm(&name).await? {
        Some(vm) => {
            // Only a change (new port or IP after a restart) is worth a write.
            if let (Some(vm_id), true) = (ctx.vm_id, ctx.vm.as_ref() != Some(&vm)) {
                record_vm_facts(s, vm_id, &vm);
            }
            ctx.vm = Some(vm.clone());
            Ok(vm)
        }
        None => Err(StepError::fatal(
            "vm.gone",
            format!(
                "VM {name} no longer exists on the {} backend; decommission and provision again",
                s.job.backend
            ),
        )),
    }
}

pub async fn deploy_gateway(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let vm = match ctx.vm.clone() {
        Some(vm) => vm,
        None => current_vm(s, ctx).await?,
    };
    let name = s.resource_name()?;
    let label = if s.job.backend == "local" {
        hero_os_tfgrid_deployer_sdk::username::host_label(&s.job.forge_username)
    } else {
        name.grid_name().to_owned()
    };
    s.p.inner.faults.arm_backend(BackendFault::DeployGateway);
    let backend = s.backend()?;
    let request = GatewayRequest {
        name: name.clone(),
        host_label: label,
        backend_url: vm.web_backend_url.clone(),
        node_id: ctx.node_id,
    };
    // The SSH steps next need the user's private key: unseal it while the gateway is made
    // (a failure here is left to `wait_ssh`, which asks again and reports it).
    let (gw, _) = tokio::join!(backend.deploy_gateway(&request, s.sink()), s.private_key());
    let gw = gw?;
    let (user_id, vm_id, name_s, fqdn, burl, node, url) = (
        s.job.user_id,
        ctx.vm_id,
        name.to_string(),
        gw.fqdn.clone(),
        gw.backend_url.clone(),
        ctx.node_id,
        gw.url.clone(),
    );
    let now = s.p.deployer().clock.now();
    s.write_later(move |conn| {
        vms::upsert_gateway(conn, user_id, vm_id, &name_s, &fqdn, &burl, node, now)?;
        if let Some(vm_id) = vm_id {
            conn.execute_cached(
                "UPDATE vms SET url = ?2, updated_at = ?3 WHERE vm_id = ?1",
                params![vm_id, url, now],
            )?;
        }
        Ok(())
    });
    let msg = format!(
        "gateway {} -> {}; public URL {}",
        gw.fqdn, gw.backend_url, gw.url
    );
    ctx.gateway = Some(gw);
    Ok(msg)
}

/// The VM as it is now and the user's private key (unsealed once per job run, borrowed).
async fn access_parts<'s>(
    s: &'s Scope<'_>,
    ctx: &mut JobContext,
) -> Result<(VmInfo, &'s zeroize::Zeroizing<String>), StepError> {
    let vm = current_vm(s, ctx).await?;
    Ok((vm, s.private_key().await?))
}

pub async fn wait_ssh(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let (mut vm, key) = access_parts(s, ctx).await?;
    // A grid VM reports its (mycelium) IP some time after the deployment: poll for it first.
    let poll = std::time::Duration::from_millis(s.p.inner.cfg.poll_ms);
    let mut n = 0u32;
    while vm.ssh.host.is_empty() {
        n += 1;
        s.line(
            EventLevel::Warn,
            Some(n),
            format!("{}: the VM has no IP yet", s.progress(n)),
        );
        if tokio::time::Instant::now() + poll >= s.deadline {
            return Err(StepError::fatal(
                "vm.no_ip",
                format!("the VM reported no IP within the step deadline ({n} polls)"),
            ));
        }
        tokio::time::sleep(poll).await;
        vm = current_vm(s, ctx).await?;
    }
    let mut target = vm.ssh.clone();
    if s.p.inner.faults.flag("ssh_refused") {
        // Test hook: aim at a loopback port nothing listens on, so the refusal is real.
        target.port = hero_os_tfgrid_deployer_backends::process::free_loopback_port()
            .map_err(|e| StepError::fatal("test.port", e.to_string()))?;
    }
    let access = SshAccess {
        target: &target,
        private_key: key,
        pinned: ctx.host_key.clone(),
    };
    let on_attempt = |n: u32, why: &str| {
        s.line(
            EventLevel::Warn,
            Some(n),
            format!("{}: {why}", s.progress(n)),
        );
    };
    let poll = std::time::Duration::from_millis(s.p.inner.cfg.poll_ms);
    let fp =
        s.p.inner
            .agent
            .wait_ssh(&access, s.deadline, poll, &on_attempt)
            .await?;
    if ctx.host_key.is_none() {
        let vm_id = ctx.vm_id;
        let fp2 = fp.clone();
        s.write_later(move |conn| {
            conn.execute_cached(
                "UPDATE vms SET host_key_fingerprint = ?2 WHERE vm_id = ?1",
                params![vm_id, fp2],
            )?;
            Ok(())
        });
        ctx.host_key = Some(fp.clone());
    }
    Ok(format!(
        "SSH answered as {}@{}:{}; host key {fp} pinned",
        target.user, target.host, target.port
    ))
}

pub async fn push_manifest(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let cfg = &s.p.inner.cfg;
    let profile = s
        .options
        .profile
        .clone()
        .unwrap_or_else(|| cfg.default_profile.clone());
    let services = cfg.profile(&profile).ok_or_else(|| {
        StepError::fatal("manifest.profile", format!("unknown profile {profile:?}"))
    })?;
    let user = ManifestUser {
        username: s.job.forge_username.clone(),
        url: ctx
            .gateway
            .as_ref()
            .map(|g| g.url.clone())
            .unwrap_or_default(),
    };
    let text = cfg
        .manifest_profiles()
        .render(&profile, &user)
        .map_err(|e| StepError::fatal(e.code(), e.to_string()))?;
    let (vm, key) = access_parts(s, ctx).await?;
    let access = SshAccess {
        target: &vm.ssh,
        private_key: key,
        pinned: ctx.host_key.clone(),
    };
    s.p.inner
        .agent
        .upload(&access, &vm.manifest_path, text.as_bytes(), Some(0o644))
        .await?;
    Ok(format!(
        "services.toml (profile {profile}: {}) uploaded to {}",
        services.join(", "),
        vm.manifest_path
    ))
}

pub async fn run_bootstrap(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let (vm, key) = access_parts(s, ctx).await?;
    let access = SshAccess {
        target: &vm.ssh,
        private_key: key,
        pinned: ctx.host_key.clone(),
    };
    let script = &s.p.inner.bootstrap_script;
    s.p.inner
        .agent
        .upload(
            &access,
            &vm.bootstrap_path(),
            script.as_bytes(),
            Some(0o755),
        )
        .await?;
    let mut command = vm.bootstrap_command();
    if s.p.inner.faults.flag("bootstrap_exit1") {
        command = format!("{command}; exit 1");
    }
    s.say(format!("running {} over SSH", vm.bootstrap_path()));
    let tail: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
    let lines = std::sync::atomic::AtomicUsize::new(0);
    let on_line = |line: &str, stderr: bool| {
        lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut t) = tail.lock() {
            if t.len() == 5 {
                t.pop_front();
            }
            t.push_back(line.to_owned());
        }
        let text = if stderr {
            format!("stderr: {line}")
        } else {
            line.to_owned()
        };
        s.line(EventLevel::Output, Some(s.attempt), text);
    };
    let code = s.p.inner.agent.run(&access, &command, &on_line).await?;
    let n = lines.load(std::sync::atomic::Ordering::Relaxed);
    match code {
        Some(0) => Ok(format!(
            "bootstrap finished with exit status 0 ({n} output lines)"
        )),
        other => {
            let last: Vec<String> = tail
                .lock()
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default();
            Err(StepError::transient(
                "bootstrap.failed",
                format!(
                    "bootstrap script exited with {}; last output: {}",
                    other
                        .map(|c| format!("status {c}"))
                        .unwrap_or_else(|| "a signal".into()),
                    if last.is_empty() {
                        "(none)".into()
                    } else {
                        last.join(" | ")
                    }
                ),
            ))
        }
    }
}

pub async fn verify_health(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let name = s.resource_name()?;
    let gw = s.backend()?.get_gateway(&name).await?.ok_or_else(|| {
        StepError::fatal(
            "gateway.gone",
            format!("gateway of {name} no longer exists; decommission and provision again"),
        )
    })?;
    ctx.gateway = Some(gw.clone());
    s.p.inner.faults.sync_health();
    let url = format!(
        "{}/{}",
        gw.url.trim_end_matches('/'),
        s.p.inner.cfg.health_path.trim_start_matches('/')
    );
    let poll = std::time::Duration::from_millis(s.p.inner.cfg.poll_ms);
    let mut n = 0u32;
    loop {
        n += 1;
        let last = match s
            .p
            .inner
            .agent
            .http_status(&url, gw.connect_addr.as_deref())
            .await
        {
            Ok(200) => return Ok(format!("GET {url} answered 200 (attempt {n})")),
            Ok(code) => format!("HTTP {code}"),
            Err(e) => e.message,
        };
        s.line(
            EventLevel::Warn,
            Some(n),
            format!("{}: GET {url}: {last}", s.progress(n)),
        );
        if tokio::time::Instant::now() + poll >= s.deadline {
            return Err(StepError::fatal(
                "health.failed",
                format!(
                    "GET {url} did not answer 200 within the step deadline ({n} attempts); last: {last}"
                ),
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

pub async fn finalize(s: &Scope<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
    let d = s.p.deployer();
    let initial_password_held = match ctx.initial_password_held {
        Some(held) => held,
        None => d.get_user(s.job.user_id).await?.initial_password_held,
    };
    let name = s.resource_name()?;
    // The gateway as it is now (a local gateway's address can change across restarts).
    if let Some(gw) = s.backend()?.get_gateway(&name).await? {
        ctx.gateway = Some(gw);
    }
    let url = ctx.gateway.as_ref().map(|g| g.url.clone()).ok_or_else(|| {
        StepError::fatal(
            "finalize.no_gateway",
            "no gateway recorded by earlier steps",
        )
    })?;
    let vm_id = ctx
        .vm_id
        .ok_or_else(|| StepError::fatal("finalize.no_vm", "no VM recorded by earlier steps"))?;
    let spec_json = serde_json::to_string(&ctx.spec.clone().unwrap_or_default())
        .unwrap_or_else(|_| "{}".into());
    let (host_key, key_fp, node, user_id, url2) = (
        ctx.host_key.clone(),
        ctx.key_fingerprint.clone(),
        ctx.node_id,
        s.job.user_id,
        url.clone(),
    );
    let now = d.clock.now();
    let line = crate::audit::OwnedEntry {
        actor: Actor(s.job.actor.clone()),
        action: "vm.provision".into(),
        subject: format!("user:{}", s.job.forge_username),
        outcome: "ok".into(),
        detail: Some(format!("job {}: VM {name} ready at {url}", s.job.job_id)),
    };
    // The VM is ready, the user's status says so, the audit log records it: written with the
    // job's end, so "succeeded" and "ready" are never seen apart.
    s.write_later(move |conn| {
        conn.execute_cached(
            "UPDATE vms SET state = 'ready', url = ?2, host_key_fingerprint = COALESCE(?3, host_key_fingerprint), \
             ssh_key_fingerprint = COALESCE(?4, ssh_key_fingerprint), spec_json = ?5, node_id = COALESCE(?6, node_id), \
             ready_at = COALESCE(ready_at, ?7), updated_at = ?7, deployer_version = ?8 WHERE vm_id = ?1",
            params![vm_id, url2, host_key, key_fp, spec_json, node, now, DEPLOYER_VERSION],
        )?;
        crate::provision::store::set_user_vm_status(conn, user_id, "ready", now)?;
        line.append(conn, now)?;
        Ok(())
    });
    ctx.result = Some(ProvisionResult {
        url: url.clone(),
        forge_username: s.job.forge_username.clone(),
        initial_password_held,
        node_id: ctx.node_id,
        vm_name: name.to_string(),
    });
    Ok(format!("VM {name} ready at {url}"))
}
