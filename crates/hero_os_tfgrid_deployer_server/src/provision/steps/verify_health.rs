//! `verify_health`: the VM's health path answers 200 through its public URL, and the URL is gated:
//! an anonymous `GET /` is sent to the Forge sign-in with this VM's own OAuth client
//! ([`crate::provision::gate`]). The job's result says both ([`GateCheck`]).

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_sdk::jobs::{EventLevel, GateCheck};

use super::register_sso::callback_uri;
use super::{JobContext, Step, StepCx, StepError};
use crate::provision::gate;

pub struct VerifyHealth;

impl VerifyHealth {
    pub const NAME: &'static str = "verify_health";
}

#[async_trait]
impl Step for VerifyHealth {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(300)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let name = s.resource_name()?;
        let gw = s.backend()?.get_gateway(&name).await?.ok_or_else(|| {
            StepError::fatal(
                "gateway.gone",
                format!("gateway of {name} no longer exists; decommission and provision again"),
            )
        })?;
        ctx.gateway = Some(gw.clone());
        let url = format!(
            "{}/{}",
            gw.url.trim_end_matches('/'),
            s.env.cfg.health_path.trim_start_matches('/')
        );
        let client_id = ctx.oauth_client_id.clone().ok_or_else(|| {
            StepError::fatal(
                "sso.no_app",
                "no OAuth app recorded by register_sso; retry the job",
            )
        })?;
        let issuer = s.env.users.forge.url().to_owned();
        let callback = callback_uri(&gw.url)?;
        let want = gate::Expected {
            issuer: &issuer,
            client_id: &client_id,
            callback: &callback,
        };
        let poll = s.poll();
        // The step gives its own verdict before the runner's deadline: every probe is bounded by
        // what is left (less a reserve for recording the verdict), so a probe still in flight at
        // the end — a loaded machine, a slow gateway — ends as `health.failed` with the last
        // answer, not as a bare `step.deadline` that says nothing about the URL.
        let reserve = poll.max(Duration::from_millis(500));
        let own_end = s.deadline.checked_sub(reserve).unwrap_or(s.deadline);
        let mut n = 0u32;
        // The last answer the URL gave: a probe cut off by the deadline must not hide it (the verdict
        // would say "no answer" about a gateway that answered 503 a second earlier).
        let mut last_answer: Option<(bool, String)> = None;
        loop {
            n += 1;
            let mut gate_failed = false;
            let connect = gw.connect_addr.as_deref();
            let probe = async {
                match s.env.agent.http_status(&url, connect).await {
                    Ok(200) => gate::check(s.env.agent.as_ref(), &gw.url, connect, &want)
                        .await
                        .map_err(|why| (true, format!("health 200, but the gate: {why}"))),
                    Ok(code) => Err((false, format!("HTTP {code}"))),
                    Err(e) => Err((false, e.message)),
                }
            };
            let last = match tokio::time::timeout_at(own_end, probe).await {
                Ok(Ok(sign_in_at)) => {
                    let note = format!(
                        "GET {url} answered 200; an anonymous GET / is sent to sign in at \
                         {sign_in_at} with client id {client_id} (attempt {n})"
                    );
                    ctx.gate = Some(GateCheck {
                        health_url: url,
                        sign_in_at,
                        client_id,
                    });
                    return Ok(note);
                }
                Ok(Err((gate, why))) => {
                    gate_failed = gate;
                    last_answer = Some((gate, why.clone()));
                    why
                }
                Err(_) => match &last_answer {
                    Some((gate, a)) => {
                        gate_failed = *gate;
                        format!("{a} (attempt {n} had no answer before the step deadline)")
                    }
                    None => "no answer before the step deadline".to_owned(),
                },
            };
            s.line(
                EventLevel::Warn,
                Some(n),
                format!("{}: GET {url}: {last}", s.progress(n)),
            );
            if tokio::time::Instant::now() + poll >= own_end {
                return Err(StepError::fatal(
                    if gate_failed { "health.not_gated" } else { "health.failed" },
                    format!(
                        "GET {url} did not answer 200 within the step deadline ({n} attempts); last: {last}"
                    ),
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }
}
