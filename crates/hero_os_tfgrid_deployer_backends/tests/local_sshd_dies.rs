//! A sandbox whose sshd dies while the deployer waits for SSH is noticed and its sshd restarted:
//! `wait_until_ready` on the sandbox's address gets in well before any step deadline, instead of
//! polling a dead port. Real sshd, killed by PID.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{user_key, SandboxReaper};
use hero_os_tfgrid_deployer_backends::compute::discard_output;
use hero_os_tfgrid_deployer_backends::process::{pid_alive, read_pid_file, wait_gone};
use hero_os_tfgrid_deployer_backends::{
    ComputeBackend, LocalBackend, LocalConfig, ResourceName, SshClient, VmRequest, VmSpec,
};
use tokio::time::Instant;

#[tokio::test]
async fn a_killed_sandbox_sshd_is_restarted_while_ssh_is_awaited() {
    let root = tempfile::tempdir().unwrap();
    let _reaper = SandboxReaper {
        root: root.path().to_path_buf(),
    };
    let mut cfg = LocalConfig::new(root.path());
    cfg.gateway_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let be = LocalBackend::start(cfg).await.unwrap();
    let key = user_key(31);
    let name = ResourceName::new(9, "dora").unwrap();
    let vm = be
        .deploy_vm(
            &VmRequest {
                name: name.clone(),
                spec: VmSpec::default(),
                ssh_public_key: key.public_openssh().to_string(),
                node_id: None,
            },
            discard_output(),
        )
        .await
        .unwrap();
    let pid_file = be.sandbox_dir(&name).join("sshd/sshd.pid");
    let pid = read_pid_file(&pid_file).unwrap();

    // sshd dies (SIGKILL, by PID); nobody calls the backend after that.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_gone(pid, Duration::from_secs(10)).await);

    let client = SshClient::new(vm.ssh.clone(), key.private_openssh(), None).unwrap();
    let session = client
        .wait_until_ready(
            Instant::now() + Duration::from_secs(30),
            Duration::from_millis(50),
            |_, _| {},
        )
        .await
        .expect("the dead sandbox sshd was never restarted");
    assert!(session.run("exit 0", |_| {}).await.unwrap().success());
    session.close().await;
    let new_pid = read_pid_file(&pid_file).unwrap();
    assert_ne!(new_pid, pid);
    assert!(pid_alive(new_pid));

    be.delete_vm(&name, discard_output()).await.unwrap();
    assert!(!pid_alive(new_pid));
    assert!(!be.sandbox_dir(&name).exists());
}
