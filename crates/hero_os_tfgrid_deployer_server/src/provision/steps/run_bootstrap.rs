//! `run_bootstrap`: the bootstrap script ran to exit status 0 on the VM, its output streamed as
//! the step's events.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_sdk::jobs::EventLevel;

use super::deploy_vm::access_parts;
use super::{JobContext, Step, StepCx, StepError};
use crate::provision::agent::SshAccess;

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

/// Output lines recorded as events per attempt as they come; after them only a count is kept, and the last
/// [`TAIL_LINES`] are recorded at the end. A bootstrap (or, during a repair, whoever controls the VM) printing
/// without end must not grow the deployer's memory or its `job_events` table without bound.
const HEAD_LINES: usize = 2000;
const TAIL_LINES: usize = 50;

/// Which of a bootstrap's output lines become events (see [`HEAD_LINES`]).
#[derive(Default)]
struct OutputLog {
    /// Lines seen so far.
    seen: usize,
    /// The last [`TAIL_LINES`] lines, recorded or not.
    tail: VecDeque<String>,
}

impl OutputLog {
    /// Takes one line; returns it when it is to be recorded now.
    fn take(&mut self, line: String) -> Option<String> {
        self.seen += 1;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        (self.seen <= HEAD_LINES).then_some(line)
    }

    /// What is still to be recorded at the end: past [`HEAD_LINES`], a line saying how many were left out, then
    /// the last lines not recorded yet.
    fn finish(&mut self) -> Vec<String> {
        let unrecorded = self.seen.saturating_sub(HEAD_LINES);
        if unrecorded == 0 {
            return Vec::new();
        }
        let shown = unrecorded.min(self.tail.len());
        let mut out = Vec::with_capacity(shown + 1);
        if unrecorded > shown {
            out.push(format!(
                "… {} output lines not recorded (the first {HEAD_LINES} and the last {shown} are)",
                unrecorded - shown
            ));
        }
        out.extend(self.tail.iter().skip(self.tail.len() - shown).cloned());
        out
    }

    /// The last `n` lines.
    fn last(&self, n: usize) -> Vec<String> {
        self.tail
            .iter()
            .skip(self.tail.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_recorded_head_then_count_then_tail_and_memory_stays_bounded() {
        // (lines printed, recorded as they come, recorded at the end)
        for (printed, live, end) in [
            (0, 0, 0),
            (3, 3, 0),
            (HEAD_LINES, HEAD_LINES, 0),
            (HEAD_LINES + 1, HEAD_LINES, 1),
            (HEAD_LINES + TAIL_LINES, HEAD_LINES, TAIL_LINES),
            (HEAD_LINES + TAIL_LINES + 1, HEAD_LINES, TAIL_LINES + 1),
            (1_000_000, HEAD_LINES, TAIL_LINES + 1),
        ] {
            let mut log = OutputLog::default();
            let recorded = (0..printed)
                .filter(|i| log.take(format!("line {i}")).is_some())
                .count();
            assert_eq!(recorded, live, "{printed}");
            assert!(log.tail.len() <= TAIL_LINES);
            let rest = log.finish();
            assert_eq!(rest.len(), end, "{printed}");
            if printed > HEAD_LINES {
                assert_eq!(rest.last().unwrap(), &format!("line {}", printed - 1));
            }
            if printed > HEAD_LINES + TAIL_LINES {
                assert!(
                    rest[0].contains(&format!(
                        "{} output lines not recorded",
                        printed - HEAD_LINES - TAIL_LINES
                    )),
                    "{}",
                    rest[0]
                );
            }
            assert_eq!(log.last(5).len(), printed.min(5));
        }
    }
}
