//! The job operations behind the RPC methods. Every operation persists first and only then
//! starts work, and records who asked in the audit log in the same write.

use hero_os_tfgrid_deployer_sdk::jobs::*;
use hero_os_tfgrid_deployer_sdk::types::UserId;
use rusqlite::{params, OptionalExtension};

use hero_os_tfgrid_deployer_sdk::types::VmStatus;

use super::runner::Loaded;
use super::states::{self, VmState};
use super::{steps, store, vms, Provisioner};
use crate::audit::Actor;
use crate::db::Cached;
use crate::error::ServiceError;

impl Provisioner {
    /// `deployer.provision_vm`: persists a queued job and starts its worker.
    pub async fn provision_vm(
        &self,
        actor: &Actor,
        p: ProvisionVmParams,
    ) -> Result<Job, ServiceError> {
        let options = p.options.unwrap_or_default();
        let backend = options
            .backend
            .clone()
            .unwrap_or_else(|| self.inner.cfg.backend.clone());
        let chosen = self.backend(&backend)?;
        // A backend missing a prerequisite (mnemonic, `tofu`, socket…) is refused here, before
        // anything is persisted or the network is asked, with the backend's own precise words.
        chosen.prerequisites().await.map_err(|e| {
            ServiceError::FailedPrecondition(format!("the {backend} backend cannot provision: {e}"))
        })?;
        let placement = chosen.placement();
        if let (Some(node), false) = (options.node_id, placement.has_nodes()) {
            return Err(ServiceError::InvalidParams(format!(
                "node {node} cannot be used with the {backend} backend: it runs VMs on this machine, not on grid nodes; leave the node out"
            )));
        }
        if let Some(profile) = &options.profile {
            if self.inner.cfg.profile(profile).is_none() {
                return Err(ServiceError::InvalidParams(format!(
                    "unknown manifest profile {profile:?}"
                )));
            }
        }
        let options_json =
            serde_json::to_string(&options).map_err(|e| ServiceError::Internal(e.to_string()))?;
        // The profile the VM will run, recorded on its row: a later repair pushes it again.
        let profile = options
            .profile
            .clone()
            .unwrap_or_else(|| self.inner.cfg.default_profile.clone());
        let (user_id, actor_s) = (p.user_id, actor.as_str().to_owned());
        let now = self.now_ms();
        let now_s = self.deployer().clock.now();
        // From the deploy request, with the same clock reading as the VM row's created_at.
        let days = options
            .expires_in_days
            .unwrap_or(self.inner.cfg.expiry.default_days);
        // The bound `extend_vm` has: a deploy must not get an expiry no extend could give.
        if days > hero_os_tfgrid_deployer_sdk::jobs::MAX_EXTEND_DAYS {
            return Err(ServiceError::InvalidParams(format!(
                "expires_in_days {days}: at most {} (ten years), or 0 for never",
                hero_os_tfgrid_deployer_sdk::jobs::MAX_EXTEND_DAYS
            )));
        }
        let expires_at = crate::fleet::expiry::expires_at(now_s, days);
        let spec = hero_os_tfgrid_deployer_backends::VmSpec::default();
        let spec_json =
            serde_json::to_string(&spec).map_err(|e| ServiceError::Internal(e.to_string()))?;
        // Not while `reconcile --fix` removes an orphan of this user (its resource names are this job's).
        let user = self.deployer().get_user(user_id).await?;
        let _claim = self.deployer().claim_name(&user.forge_username).await?;
        // One write: checks and the new job see the same state, and it is one round trip.
        let created = self
            .db()
            .write(move |conn| -> Result<Loaded, ServiceError> {
                let username = user_name(conn, user_id)?;
                // `delete_user` marks the user before removing their secrets and row (see there).
                let deleting: bool = conn.query_row_cached(
                    "SELECT setup_state = 'deleting' FROM users WHERE user_id = ?1",
                    [user_id],
                    |r| r.get(0),
                )?;
                if deleting {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "user {username} is being deleted"
                    )));
                }
                let live = vms::live_vm(conn, user_id)?;
                if let Some(vm) = &live {
                    if vm.state == VmState::Ready.as_str() {
                        if store::active_job_of(conn, user_id)?.is_some() {
                            return Err(store::conflict(conn, user_id, &username));
                        }
                        return Err(ServiceError::FailedPrecondition(format!(
                            "user {username} already has a ready VM {} at {}; decommission it first",
                            vm.name,
                            vm.url.as_deref().unwrap_or_default()
                        )));
                    }
                }
                // The key the user already has (the usual case after a first VM): the job
                // starts knowing it, and its ssh_key step adopts it without another read.
                let key = super::sshkeys::public_key_of(conn, user_id)?;
                // The VM row comes with the job (persist, then act): it exists before any
                // step runs, so `deploy_vm` asks the backend without a write to wait for.
                let name = steps::resource_name(user_id, &username)
                    .map_err(|e| {
                        ServiceError::FailedPrecondition(format!(
                            "cannot name a VM for user {username}: {}",
                            e.message
                        ))
                    })?
                    .to_string();
                let vm_id = vms::record_planned(
                    conn,
                    live.as_ref(),
                    &vms::PlannedVm {
                        user_id,
                        forge_username: &username,
                        backend: &backend,
                        name: &name,
                        node_id: None,
                        spec_json: &spec_json,
                        job_id: None,
                        ssh_key_fingerprint: key.as_ref().map(|k| k.fingerprint.as_str()),
                        now: now_s,
                    },
                )?;
                conn.execute_cached(
                    "UPDATE vms SET expires_at = ?2, expiry_warned_at = NULL, profile = ?3 WHERE vm_id = ?1",
                    params![vm_id, expires_at, profile],
                )?;
                let context = steps::JobContext {
                    key_fingerprint: key.as_ref().map(|k| k.fingerprint.clone()),
                    public_key: key.map(|k| k.public_key),
                    spec: Some(spec),
                    vm_id: Some(vm_id),
                    ..Default::default()
                };
                let context_json = serde_json::to_string(&context)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                let created = create_job(
                    conn,
                    &store::NewJob {
                        user_id,
                        forge_username: &username,
                        kind: JobKind::Provision,
                        backend: &backend,
                        actor: &actor_s,
                        options_json: &options_json,
                        context_json: &context_json,
                        steps: steps::PROVISION_STEPS,
                        now_ms: now,
                    },
                    now_s,
                )?;
                vms::set_job(conn, vm_id, created.0.job_id)?;
                Ok(created)
            })
            .await?;
        Ok(self.launch(created))
    }

    /// `deployer.decommission_vm`: needs a live VM record; the job deletes gateway and VM.
    pub async fn decommission_vm(
        &self,
        actor: &Actor,
        user_id: UserId,
    ) -> Result<Job, ServiceError> {
        match self.decommission(actor, user_id, None).await? {
            Some(job) => Ok(job),
            None => Err(ServiceError::Internal(
                "a decommission without a condition created no job".into(),
            )),
        }
    }

    /// The expiry sweep's decommission: only if the VM is still ready and expired at `now` in the same write that
    /// creates the job (see [`vms::still_expired`]); `None` when it no longer is (extended since the sweep read it).
    pub(crate) async fn decommission_expired(
        &self,
        actor: &Actor,
        user_id: UserId,
        now: i64,
    ) -> Result<Option<Job>, ServiceError> {
        self.decommission(actor, user_id, Some(now)).await
    }

    async fn decommission(
        &self,
        actor: &Actor,
        user_id: UserId,
        only_if_expired_at: Option<i64>,
    ) -> Result<Option<Job>, ServiceError> {
        let actor_s = actor.as_str().to_owned();
        let now = self.now_ms();
        let now_s = self.deployer().clock.now();
        let default_backend = self.inner.cfg.backend.clone();
        // One write, as for provision_vm.
        let created =
            self.db()
                .write(move |conn| -> Result<Option<Loaded>, ServiceError> {
                    let username = user_name(conn, user_id)?;
                    if let Some(now) = only_if_expired_at {
                        if !vms::still_expired(conn, user_id, now)? {
                            return Ok(None);
                        }
                    }
                    if store::active_job_of(conn, user_id)?.is_some() {
                        return Err(store::conflict(conn, user_id, &username));
                    }
                    let vm = vms::live_vm(conn, user_id)?;
                    let status: VmStatus = conn.query_row_cached(
                        "SELECT vm_status FROM users WHERE user_id = ?1",
                        [user_id],
                        |r| r.get(0),
                    )?;
                    let backend = match &vm {
                        Some(vm) => vm.backend.clone(),
                        None if matches!(status, VmStatus::Failed | VmStatus::Decommissioning) => {
                            default_backend
                        }
                        None => {
                            return Err(ServiceError::FailedPrecondition(format!(
                                "user {username} has no VM to decommission (status {})",
                                status.as_str()
                            )))
                        }
                    };
                    // A record whose backend was never asked: nothing to delete there, and the
                    // job does not ask it (it may not even be configured any more).
                    let untouched = match &vm {
                        Some(vm) => !vms::may_exist_on_backend(conn, vm)?,
                        None => false,
                    };
                    let context_json = if untouched {
                        serde_json::to_string(&steps::JobContext {
                            backend_untouched: true,
                            ..Default::default()
                        })
                        .map_err(|e| ServiceError::Internal(e.to_string()))?
                    } else {
                        "{}".to_owned()
                    };
                    conn.execute_cached(
                    "UPDATE vms SET state = ?3, updated_at = ?2 WHERE user_id = ?1 AND state != ?4",
                    params![user_id, now_s, VmState::Decommissioning, VmState::Decommissioned],
                )?;
                    create_job(
                        conn,
                        &store::NewJob {
                            user_id,
                            forge_username: &username,
                            kind: JobKind::Decommission,
                            backend: &backend,
                            actor: &actor_s,
                            options_json: "{}",
                            context_json: &context_json,
                            steps: steps::DECOMMISSION_STEPS,
                            now_ms: now,
                        },
                        now_s,
                    )
                    .map(Some)
                })
                .await?;
        Ok(created.map(|c| self.launch(c)))
    }

    /// `deployer.repair_vm`: a repair job on the user's ready VM, with the profile it runs.
    pub async fn repair_vm(&self, actor: &Actor, user_id: UserId) -> Result<Job, ServiceError> {
        self.start_in_place(actor, user_id, JobKind::Repair, None)
            .await
    }

    /// A `sync_access` job on the user's ready VM: who may open it, written again
    /// (`crate::fleet::access` starts these).
    pub async fn sync_access(&self, actor: &Actor, user_id: UserId) -> Result<Job, ServiceError> {
        self.start_in_place(actor, user_id, JobKind::SyncAccess, None)
            .await
    }

    /// `deployer.redeploy_vm`: the repair steps on the user's ready VM with another service
    /// profile; the VM row records the profile once the job succeeds (`finish`), so a failed
    /// or cancelled redeploy leaves the recorded profile as it was (a repair restores it).
    pub async fn redeploy_vm(
        &self,
        actor: &Actor,
        p: RedeployVmParams,
    ) -> Result<Job, ServiceError> {
        if self.inner.cfg.profile(&p.profile).is_none() {
            return Err(ServiceError::InvalidParams(format!(
                "unknown manifest profile {:?}; known: {}",
                p.profile,
                self.inner
                    .cfg
                    .manifest_profiles()
                    .profiles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.start_in_place(actor, p.user_id, JobKind::Redeploy, Some(p.profile))
            .await
    }

    /// A job that works in place ([`JobKind::works_in_place`]) on the user's ready VM, starting
    /// from what its provision job knew (the VM, its host key, its OAuth client) and with its
    /// options, the manifest profile being `profile` (a redeploy) or the one the VM runs.
    async fn start_in_place(
        &self,
        actor: &Actor,
        user_id: UserId,
        kind: JobKind,
        profile: Option<String>,
    ) -> Result<Job, ServiceError> {
        debug_assert!(kind.works_in_place());
        let actor_s = actor.as_str().to_owned();
        // Where the VM's gateway is now (it may have moved since the provision, e.g. a local
        // gateway on another port after a restart): the manifest and the health check use it.
        let current_gateway = match self
            .db()
            .call(move |conn| -> Result<_, ServiceError> { Ok(vms::live_vm(conn, user_id)?) })
            .await?
        {
            Some(vm) if vm.state == VmState::Ready.as_str() => {
                let name = steps::resource_name(user_id, &vm.forge_username)
                    .map_err(|e| ServiceError::FailedPrecondition(e.message))?;
                self.backend(&vm.backend)?
                    .get_gateway(&name)
                    .await
                    .map_err(|e| ServiceError::Backend(format!("[{}] {e}", e.code())))?
            }
            _ => None,
        };
        let now = self.now_ms();
        let now_s = self.deployer().clock.now();
        let verb = kind.as_str();
        let created = self
            .db()
            .write(move |conn| -> Result<Loaded, ServiceError> {
                let username = user_name(conn, user_id)?;
                if store::active_job_of(conn, user_id)?.is_some() {
                    return Err(store::conflict(conn, user_id, &username));
                }
                let vm = vms::live_vm(conn, user_id)?
                    .filter(|vm| vm.state == VmState::Ready.as_str())
                    .ok_or_else(|| {
                        ServiceError::FailedPrecondition(format!(
                            "user {username} has no ready VM to {verb}; deploy one (`vm deploy {username}`)"
                        ))
                    })?;
                let made_by = vm.job_id.ok_or_else(|| {
                    ServiceError::FailedPrecondition(format!(
                        "the VM {} of {username} has no provision job on record to {verb} from; decommission and deploy again",
                        vm.name
                    ))
                })?;
                let internals = store::internals(conn, made_by)?;
                let unreadable = |what: &str, e: serde_json::Error| {
                    ServiceError::Internal(format!("the {what} of job {made_by} cannot be read: {e}"))
                };
                let mut context: steps::JobContext = serde_json::from_str(&internals.context_json)
                    .map_err(|e| unreadable("context", e))?;
                context.vm_id = Some(vm.vm_id);
                context.gate = None;
                if current_gateway.is_some() {
                    context.gateway = current_gateway;
                }
                let mut options: ProvisionOptions = serde_json::from_str(&internals.options_json)
                    .map_err(|e| unreadable("options", e))?;
                if let Some(p) = profile.or(vm.profile) {
                    options.profile = Some(p);
                }
                let context_json = serde_json::to_string(&context)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                let options_json = serde_json::to_string(&options)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                create_job(
                    conn,
                    &store::NewJob {
                        user_id,
                        forge_username: &username,
                        kind,
                        backend: &vm.backend,
                        actor: &actor_s,
                        options_json: &options_json,
                        context_json: &context_json,
                        steps: steps::steps_for(kind),
                        now_ms: now,
                    },
                    now_s,
                )
            })
            .await?;
        Ok(self.launch(created))
    }

    /// After a job is committed: wake its followers and start its worker.
    fn launch(&self, loaded: Loaded) -> Job {
        let job = loaded.0.clone();
        self.bump(job.job_id);
        self.spawn_worker_with(job.job_id, Some(loaded));
        job
    }

    pub async fn get_job(&self, job_id: JobId) -> Result<Job, ServiceError> {
        self.db()
            .call(move |conn| store::require_job(conn, job_id))
            .await
    }

    pub async fn list_jobs(&self, p: ListJobsParams) -> Result<JobsPage, ServiceError> {
        self.db().call(move |conn| store::list_jobs(conn, &p)).await
    }

    /// `deployer.cancel_job`: marks the job `cancelling` (persisted, so a restart still cleans
    /// up) and tells its worker.
    pub async fn cancel_job(&self, actor: &Actor, job_id: JobId) -> Result<Job, ServiceError> {
        let now = self.now_ms();
        let now_s = self.deployer().clock.now();
        let actor = actor.clone();
        let actor_s = actor.as_str().to_owned();
        self.db()
            .write(move |conn| -> Result<(), ServiceError> {
                let job = store::require_job(conn, job_id)?;
                if !job.state.is_active() {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "job {job_id} is {} and cannot be cancelled",
                        job.state.as_str()
                    )));
                }
                conn.execute_cached(
                    "UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?1",
                    [job_id],
                )?;
                // A queued job stays queued: its worker sees the request when it looks.
                if job.state != JobState::Queued {
                    states::move_job(conn, job_id, JobState::Cancelling)?;
                }
                store::append_event(
                    conn,
                    job_id,
                    &store::EventRow::job(
                        now,
                        EventLevel::Warn,
                        job.steps.len() as u32,
                        format!("cancel requested by {actor_s}"),
                    ),
                )?;
                audit_job_request(conn, now_s, &actor, "job.cancel", &job)?;
                Ok(())
            })
            .await?;
        self.bump(job_id);
        self.signal_cancel(job_id);
        self.get_job(job_id).await
    }

    /// `deployer.retry_job`: a failed job goes back to `queued` and resumes at its failed step
    /// (done steps stay done; their context is kept).
    pub async fn retry_job(&self, actor: &Actor, job_id: JobId) -> Result<Job, ServiceError> {
        let now = self.now_ms();
        let now_s = self.deployer().clock.now();
        let actor = actor.clone();
        let actor_s = actor.as_str().to_owned();
        self.db()
            .write(move |conn| -> Result<(), ServiceError> {
                let job = store::require_job(conn, job_id)?;
                if job.state != JobState::Failed {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "job {job_id} is {}; only failed jobs can be retried",
                        job.state.as_str()
                    )));
                }
                // What a retry may still act on. The user must exist and not be on its way out: a retried
                // provision of a deleted user made a VM no user owns, which neither decommission nor reconcile
                // could then find. And a job that is not about making a VM (decommission, repair, redeploy)
                // is retried only while it is the user's latest: after a newer job it would act on a VM it was
                // never about (delete a VM made since, or mark a decommissioned one ready).
                let setup: Option<String> = conn
                    .query_row_cached(
                        "SELECT setup_state FROM users WHERE user_id = ?1",
                        [job.user_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                match setup.as_deref() {
                    None => {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "user {} was deleted; job {job_id} cannot be retried",
                            job.forge_username
                        )))
                    }
                    Some("deleting") => {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "user {} is being deleted; job {job_id} cannot be retried",
                            job.forge_username
                        )))
                    }
                    Some(_) => {}
                }
                if job.kind != JobKind::Provision {
                    let latest: JobId = conn.query_row_cached(
                        "SELECT MAX(job_id) FROM jobs WHERE user_id = ?1",
                        [job.user_id],
                        |r| r.get(0),
                    )?;
                    if latest != job_id {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "job {job_id} is not the latest of user {} (job {latest} came after it), so what it was for has moved on; start the action again instead",
                            job.forge_username
                        )));
                    }
                }
                if job.kind == JobKind::Provision {
                    if let Some(vm) = vms::live_vm(conn, job.user_id)? {
                        if vm.state == VmState::Ready.as_str() {
                            return Err(ServiceError::FailedPrecondition(format!(
                                "user {} already has a ready VM; nothing to retry",
                                job.forge_username
                            )));
                        }
                    }
                    forget_decommissioned_vm(conn, job_id)?;
                }
                match states::move_job(conn, job_id, JobState::Queued) {
                    Ok(_) => {}
                    Err(ServiceError::Db(crate::db::DbError::Sql(e))) if store::is_unique_violation(&e) => {
                        return Err(store::conflict(conn, job.user_id, &job.forge_username))
                    }
                    Err(e) => return Err(e),
                }
                conn.execute_cached(
                    "UPDATE jobs SET error = NULL, finished_at_ms = NULL, cancel_requested = 0 WHERE job_id = ?1",
                    [job_id],
                )?;
                conn.execute_cached(
                    "UPDATE job_steps SET state = ?2, finished_at_ms = NULL, duration_ms = NULL \
                     WHERE job_id = ?1 AND state IN (?3, ?4)",
                    params![job_id, StepState::Pending, StepState::Failed, StepState::Running],
                )?;
                let first = store::steps_of(conn, job_id)?
                    .into_iter()
                    .find(|s| s.state != StepState::Done && s.state != StepState::Skipped);
                store::set_user_vm_status(conn, job.user_id, store::busy_status(job.kind), now_s)?;
                store::append_event(
                    conn,
                    job_id,
                    &store::EventRow::job(
                        now,
                        EventLevel::Info,
                        job.steps.len() as u32,
                        match first {
                            Some(s) => format!(
                                "retry requested by {actor_s}: resuming from step {}/{} {}",
                                s.index,
                                job.steps.len(),
                                s.name
                            ),
                            None => format!("retry requested by {actor_s}"),
                        },
                    ),
                )?;
                audit_job_request(conn, now_s, &actor, "job.retry", &job)?;
                Ok(())
            })
            .await?;
        self.bump(job_id);
        self.spawn_worker(job_id);
        self.get_job(job_id).await
    }
}

/// The audit line of a request on an existing job, inside the same write as its effect.
fn audit_job_request(
    conn: &rusqlite::Connection,
    now_s: i64,
    actor: &Actor,
    action: &str,
    job: &Job,
) -> Result<(), ServiceError> {
    crate::audit::append(
        conn,
        now_s,
        crate::audit::Entry {
            actor,
            action,
            subject: &format!("job:{}", job.job_id),
            outcome: "ok",
            detail: Some(&format!("user {}", job.forge_username)),
        },
    )?;
    Ok(())
}

/// The Forge username of a user, read inside the caller's write.
fn user_name(conn: &rusqlite::Connection, user_id: UserId) -> Result<String, ServiceError> {
    Ok(crate::users::user_by_id(conn, user_id)?
        .ok_or_else(|| ServiceError::NotFound(format!("no user with user_id {user_id}")))?
        .forge_username)
}

/// A provision job knows its VM row from its creation on (`provision_vm`). If that row was
/// decommissioned since the job failed, the retried job must not deploy against it: it
/// forgets it, and `deploy_vm` records a new one before it acts.
fn forget_decommissioned_vm(
    conn: &rusqlite::Connection,
    job_id: JobId,
) -> Result<(), ServiceError> {
    let internals = store::internals(conn, job_id)?;
    let mut ctx: steps::JobContext =
        serde_json::from_str(&internals.context_json).unwrap_or_default();
    let Some(vm_id) = ctx.vm_id else {
        return Ok(());
    };
    let gone =
        vms::vm_by_id(conn, vm_id)?.is_none_or(|vm| vm.state == VmState::Decommissioned.as_str());
    if gone {
        ctx.vm_id = None;
        let context_json =
            serde_json::to_string(&ctx).map_err(|e| ServiceError::Internal(e.to_string()))?;
        conn.execute_cached(
            "UPDATE jobs SET context_json = ?2 WHERE job_id = ?1",
            params![job_id, context_json],
        )?;
    }
    Ok(())
}

/// Everything that makes a job exist, inside the caller's write: the job and its steps, the
/// user's VM status, the "job created" event and the audit record of the request. One write,
/// so there is never a job without its audit line, nor an audit line without its job.
fn create_job(
    conn: &rusqlite::Connection,
    new: &store::NewJob<'_>,
    now_s: i64,
) -> Result<Loaded, ServiceError> {
    let job_id = store::insert_job(conn, new)?;
    let kind = new.kind.as_str();
    let action = match new.kind {
        JobKind::Provision => "vm.provision_requested",
        JobKind::Decommission => "vm.decommission_requested",
        JobKind::Repair => "vm.repair_requested",
        JobKind::Redeploy => "vm.redeploy_requested",
        JobKind::SyncAccess => "vm.sync_access_requested",
    };
    store::set_user_vm_status(conn, new.user_id, store::busy_status(new.kind), now_s)?;
    store::append_event(
        conn,
        job_id,
        &store::EventRow::job(
            new.now_ms,
            EventLevel::Info,
            new.steps.len() as u32,
            format!(
                "job created by {}: {kind} {} on {} ({} steps)",
                new.actor,
                new.forge_username,
                new.backend,
                new.steps.len()
            ),
        ),
    )?;
    crate::audit::append(
        conn,
        now_s,
        crate::audit::Entry {
            actor: &Actor(new.actor.to_owned()),
            action,
            subject: &format!("user:{}", new.forge_username),
            outcome: "ok",
            detail: Some(&format!("job {job_id}")),
        },
    )?;
    let (job, internals) = store::as_inserted(new, job_id);
    Ok(Loaded(job, internals))
}
