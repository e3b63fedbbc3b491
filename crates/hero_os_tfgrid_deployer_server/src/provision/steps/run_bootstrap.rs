//! `run_bootstrap`: the bootstrap script ran to exit status 0 on the VM, its output streamed as
//! the step's events.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_sdk::jobs::EventLevel;

use super::deploy_vm::access_parts;
use super::{JobContext, Step, StepCx, StepError};
use crate::provision::agent::SshAccess;
use crate::provision::output_log::OutputLog;

pub struct RunBootstrap;

impl RunBootstrap {
    pub const NAME: &'static str = "run_bootstrap";
}

#[async_trait]
impl Step for RunBootstrap {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(1800)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let (vm, key) = access_parts(s, ctx).await?;
        let access = SshAccess {
            target: &vm.ssh,
            private_key: key,
            pinned: ctx.host_key.clone(),
        };
        let script = &s.env.bootstrap_script;
        s.env
            .agent
            .upload(
                &access,
                &vm.bootstrap_path(),
                script.as_bytes(),
                Some(0o755),
            )
            .await?;
        let command = vm.bootstrap_command();
        s.say(format!("running {} over SSH", vm.bootstrap_path()));
        let log = Mutex::new(OutputLog::default());
        let on_line = |line: &str, stderr: bool| {
            let text = if stderr {
                format!("stderr: {line}")
            } else {
                line.to_owned()
            };
            let now = log.lock().ok().and_then(|mut l| l.take(text));
            if let Some(text) = now {
                s.line(EventLevel::Output, Some(s.attempt), text);
            }
        };
        let code = s.env.agent.run(&access, &command, &on_line).await?;
        let (n, rest, last) = log
            .lock()
            .map(|mut l| (l.seen, l.finish(), l.last(5)))
            .unwrap_or_default();
        for text in rest {
            s.line(EventLevel::Output, Some(s.attempt), text);
        }
        match code {
            Some(0) => Ok(format!(
                "bootstrap finished with exit status 0 ({n} output lines)"
            )),
            other => {
                let last: Vec<String> = last
                    .into_iter()
                    .map(|l| l.strip_prefix("stderr: ").map(str::to_owned).unwrap_or(l))
                    .collect();
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
}
