//! One type per RPC method. The server registers a handler per type, the client calls by type and
//! the OpenRPC document is generated from [`describe_all`], so a method cannot exist in one place
//! and be missing in another.

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};

use crate::jobs::*;
use crate::types::*;

/// Binds a method name to its params and result types.
pub trait Method {
    /// Full JSON-RPC method name, `deployer.<verb>`.
    const NAME: &'static str;
    /// One line for the OpenRPC `summary`.
    const SUMMARY: &'static str;
    /// Error kinds this method may return besides the standard ones.
    const ERRORS: &'static [crate::ErrorKind];
    /// Params, always by name (a JSON object).
    type Params: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    type Output: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
    /// Served only over the local unix socket, because the result hands out a secret (a password, a
    /// private key, a secret slot's value) or the call writes one. Nothing on the TCP listener proves
    /// who is calling, so the server refuses these there for every caller, in one place, before the
    /// handler runs (`Forbidden`). Declared here, next to the method, so a new secret-returning method
    /// cannot be served over TCP by forgetting a check in its handler.
    const LOCAL_ONLY: bool;
    /// Only reads: a call changes nothing (no row, no secret, no Forge or grid resource, no probe), so sending
    /// it twice is harmless (the client retries these) and it may be served over TCP. Every other method is
    /// served only over the local unix socket: nothing on the TCP listener proves who is calling, so there it is
    /// read-only, refused in one place before the handler runs (`Forbidden`).
    const READS: bool;
}

/// Name, summary, errors and schemas of one method, for the OpenRPC document.
pub struct MethodDescription {
    pub name: &'static str,
    pub summary: &'static str,
    pub errors: &'static [crate::ErrorKind],
    pub params: fn(&mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema,
    pub result: fn(&mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema,
    pub result_name: &'static str,
}

/// Describes method `M`.
pub fn describe<M: Method>() -> MethodDescription {
    MethodDescription {
        name: M::NAME,
        summary: M::SUMMARY,
        errors: M::ERRORS,
        params: |g| g.subschema_for::<M::Params>(),
        result: |g| g.subschema_for::<M::Output>(),
        result_name: short_type_name::<M::Output>(),
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// One entry per method: `Type = "deployer.name", "summary", (Params) -> Output, [errors];`, with flags after
/// the errors: `reads` for a method that only reads ([`Method::READS`]), `local_only` for one whose result or
/// params carry a secret ([`Method::LOCAL_ONLY`]).
macro_rules! methods {
    (@local) => { false };
    (@local local_only $($rest:ident)*) => { true };
    (@local $other:ident $($rest:ident)*) => { methods!(@local $($rest)*) };
    (@reads) => { false };
    (@reads reads $($rest:ident)*) => { true };
    (@reads $other:ident $($rest:ident)*) => { methods!(@reads $($rest)*) };
    (@names $flag:ident; $(($name:literal, $ty:ident)),*) => {{
        const ALL: [(&str, bool); [$($name),*].len()] = [$(($name, methods!(@flag $flag $ty))),*];
        const N: usize = {
            let mut n = 0;
            let mut i = 0;
            while i < ALL.len() {
                if ALL[i].1 {
                    n += 1;
                }
                i += 1;
            }
            n
        };
        let mut out = [""; N];
        let (mut i, mut j) = (0, 0);
        while i < ALL.len() {
            if ALL[i].1 {
                out[j] = ALL[i].0;
                j += 1;
            }
            i += 1;
        }
        out
    }};
    (@flag local $ty:ident) => { <$ty as Method>::LOCAL_ONLY };
    (@flag reads $ty:ident) => { <$ty as Method>::READS };
    ($( $(#[$doc:meta])* $ty:ident = $name:literal, $summary:literal, ($params:ty) -> $out:ty, [$($err:ident),*] $($flag:ident)*;)*) => {
        $(
            $(#[$doc])*
            pub struct $ty;
            impl Method for $ty {
                const NAME: &'static str = $name;
                const SUMMARY: &'static str = $summary;
                const ERRORS: &'static [crate::ErrorKind] = &[$(crate::ErrorKind::$err),*];
                type Params = $params;
                type Output = $out;
                const LOCAL_ONLY: bool = methods!(@local $($flag)*);
                const READS: bool = methods!(@reads $($flag)*);
            }
        )*

        /// The methods whose result or params carry a secret ([`Method::LOCAL_ONLY`]), in document order.
        pub const LOCAL_ONLY_METHOD_NAMES: &[&str] = &methods!(@names local; $(($name, $ty)),*);

        /// The methods that only read ([`Method::READS`]): the only ones served over TCP, and the only ones the
        /// client sends again on a fresh connection. In document order.
        pub const READ_METHOD_NAMES: &[&str] = &methods!(@names reads; $(($name, $ty)),*);

        /// Every method of the service, in document order.
        pub fn describe_all() -> Vec<MethodDescription> {
            vec![$(describe::<$ty>()),*]
        }

        /// Every method name of the service.
        pub const ALL_METHOD_NAMES: &[&str] = &[$($name),*];
    };
}

methods! {
    /// Create (or adopt) the Forge user and mint their token.
    CreateUser = "deployer.create_user",
        "Make sure a Forge account exists for a username and hold its initial password and API token",
        (CreateUserParams) -> CreateUserResult,
        [InvalidUsername, AlreadyExists, ForgeUnavailable, ForgeAuthRejected, ForgeConflict, ForgeProtocol, SecretStore];
    GetUser = "deployer.get_user", "Get one user by id",
        (UserIdParams) -> User, [NotFound] reads;
    FindUser = "deployer.find_user", "Get one user by Forge username",
        (FindUserParams) -> User, [NotFound, InvalidUsername] reads;
    ListUsers = "deployer.list_users", "List users by username, with prefix search and stable cursor paging",
        (ListUsersParams) -> UsersPage, [] reads;
    DeleteUser = "deployer.delete_user",
        "Forget a user and their secrets; the Forge account is kept. Refused while the user has a live VM",
        (UserIdParams) -> DeleteUserResult, [NotFound, FailedPrecondition, SecretStore];
    RevealInitialPassword = "deployer.reveal_initial_password",
        "Show a user's initial Forge password again (local socket only; audited)",
        (UserIdParams) -> RevealPasswordResult, [NotFound, Forbidden, FailedPrecondition, SecretStore] local_only;
    ListEvents = "deployer.list_events", "Read the audit log, newest first, with filters",
        (ListEventsParams) -> EventsPage, [] reads;
    SecretSet = "deployer.secret_set", "Store a secret in a slot (local socket only; audited, value never logged)",
        (SecretSetParams) -> Ack, [Forbidden, SecretStore, InvalidParams] local_only;
    SecretGet = "deployer.secret_get", "Read a secret (local socket only; audited)",
        (SecretSlotParams) -> SecretValue, [Forbidden, NotFound, SecretStore] local_only;
    SecretList = "deployer.secret_list", "List secret slot names, never values (local socket only)",
        (SecretListParams) -> SecretSlots, [Forbidden, SecretStore] local_only;
    SecretDelete = "deployer.secret_delete", "Delete a secret (local socket only; audited)",
        (SecretSlotParams) -> Ack, [Forbidden, NotFound, SecretStore] local_only;
    GetServerInfo = "deployer.server_info", "Version, Forge in use, data dir and counts",
        (NoParams) -> ServerInfo, [] reads;
    ProvisionVm = "deployer.provision_vm",
        "Start a provision job for a user: forge_user, ssh_key, select_node, deploy_vm, deploy_gateway, register_sso, wait_ssh, push_manifest, configure_sso, run_bootstrap, verify_health, finalize",
        (ProvisionVmParams) -> Job, [NotFound, JobConflict, FailedPrecondition, Backend];
    DecommissionVm = "deployer.decommission_vm",
        "Start a decommission job: delete_gateway, delete_vm, delete_sso_app, mark_decommissioned (the VM record is kept for audit)",
        (UserIdParams) -> Job, [NotFound, JobConflict, FailedPrecondition];
    RepairVm = "deployer.repair_vm",
        "Start a repair job on the user's ready VM, re-running push_manifest, configure_sso, run_bootstrap, verify_health (the VM, its gateway and its OAuth app stay)",
        (UserIdParams) -> Job, [NotFound, JobConflict, FailedPrecondition];
    RedeployVm = "deployer.redeploy_vm",
        "Start a redeploy job on the user's ready VM with another service profile: the repair steps with the new profile's services.toml; the VM records the profile when the job succeeds",
        (RedeployVmParams) -> Job, [NotFound, JobConflict, FailedPrecondition, InvalidParams];
    GetJob = "deployer.get_job", "Get one job with its steps", (JobIdParams) -> Job, [NotFound] reads;
    ListJobs = "deployer.list_jobs", "List jobs, newest first", (ListJobsParams) -> JobsPage, [] reads;
    CancelJob = "deployer.cancel_job",
        "Cancel an active job; a provision cleans up what it made",
        (JobIdParams) -> Job, [NotFound, FailedPrecondition];
    RetryJob = "deployer.retry_job", "Resume a failed job from its failed step",
        (JobIdParams) -> Job, [NotFound, FailedPrecondition, JobConflict];
    JobEvents = "deployer.job_events",
        "Follow a job's events: replay after a sequence number and long-poll for new ones",
        (JobEventsParams) -> JobEventsPage, [NotFound] reads;
    GetVm = "deployer.get_vm", "A user's current VM, earlier VMs, and SSH key facts",
        (UserIdParams) -> VmDetails, [NotFound] reads;
    ExtendVm = "deployer.extend_vm",
        "Move a live VM's expiry N days later, or make it never expire (audited)",
        (ExtendVmParams) -> VmRecord, [NotFound, FailedPrecondition, InvalidParams];
    ListVms = "deployer.list_vms",
        "Every live VM in username order: state, URL, backend, node and the health watch's last verdict",
        (ListVmsParams) -> VmList, [] reads;
    CheckHealth = "deployer.check_health",
        "Probe the public /health of every ready VM (or one user's) through its gateway now; transitions are audited",
        (CheckHealthParams) -> VmList, [NotFound];
    ExportSshKey = "deployer.export_ssh_key",
        "Export a user's SSH private key to reach their VM (local socket only; audited)",
        (UserIdParams) -> SshKeyExport, [NotFound, Forbidden, SecretStore] local_only;
    ForgetVm = "deployer.forget_vm",
        "Forget a user's VM and gateway records whose resources are gone (the backend confirms, or force); never during a job (audited)",
        (ForgetVmParams) -> ForgetVmResult, [NotFound, Refused, JobConflict, FailedPrecondition];
    Reconcile = "deployer.reconcile",
        "Compare the backend's inventory with the deployer's records; with fix, remove orphans (audited)",
        (ReconcileParams) -> ReconcileReport, [Backend];
    // Not `reads`, so never over TCP: it asks the backend now, which runs `tofu output` (or takes the sandbox
    // lock and may restart its sshd), and a TCP flood of it queued on the user's tofu lock. Its only use is
    // with `export_ssh_key`, local-only anyway.
    VmSshTarget = "deployer.vm_ssh_target",
        "Where to reach a user's live VM over SSH now: host, port, login and the pinned host key fingerprint (local socket only)",
        (UserIdParams) -> VmSshAccess, [NotFound, FailedPrecondition, Backend];
    ResetForgePassword = "deployer.reset_forge_password",
        "Give a user's Forge account a new random password through the admin API and show it once (local socket only; audited)",
        (UserIdParams) -> ResetPasswordResult,
        [NotFound, Forbidden, FailedPrecondition, ForgeUnavailable, ForgeAuthRejected, ForgeProtocol, SecretStore] local_only;
}
