//! `GET /metrics` on the real server binary, parsed by the Prometheus project's own Python client
//! (`tools/peers/parse_metrics.py`, installed by `scripts/install-test-deps.sh`), checked against
//! what the test did: users made and refused by the real dev Forge, a VM provisioned on the
//! local backend, on the unix socket and on the TCP listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
mod support_jobs;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hero_os_tfgrid_deployer_sdk::jobs::JobState;
use serde_json::Value;
use support::Server;
use support_jobs::*;

/// GET over the unix socket; returns status, content type and body.
async fn get_unix(server: &Server, path: &str) -> (u16, String, String) {
    let stream = tokio::net::UnixStream::connect(&server.socket)
        .await
        .unwrap();
    get_on(stream, path).await
}

async fn get_tcp(addr: &str, path: &str) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    get_on(stream, path).await
}

async fn get_on<S>(stream: S, path: &str) -> (u16, String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Empty};
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

fn python() -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/peers/py/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/install-test-deps.sh (installs prometheus_client)",
        py.display()
    );
    py
}

/// Every sample of `text`, as the Prometheus client parses it (strict OpenMetrics and the
/// classic text format must both accept it and agree).
fn parse(text: &str) -> Vec<Value> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/peers/parse_metrics.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The value of the one sample named `name` with exactly `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    let hits: Vec<&Value> = samples
        .iter()
        .filter(|s| s["name"] == name && s["labels"].as_object() == Some(&want))
        .collect();
    assert_eq!(hits.len(), 1, "{name} {labels:?} in {samples:#?}");
    hits[0]["value"].as_f64().unwrap()
}

fn family_type(samples: &[Value], family: &str) -> String {
    samples
        .iter()
        .find(|s| s["family"] == family)
        .unwrap_or_else(|| panic!("no family {family}"))["type"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The TCP listener's address, from the server's start-up log line.
fn tcp_addr(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("listening on TCP")) {
            let at = line.find("addr=").unwrap() + "addr=".len();
            return line[at..]
                .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
                .next()
                .unwrap()
                .to_owned();
        }
        assert!(Instant::now() < deadline, "no TCP line in {log}");
        support::poll_pause();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_happened_on_socket_and_tcp() {
    let (stack, faults) = stack(vec![(
        "HERO_DEPLOYER_TCP_LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    )])
    .await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();

    // Before anything: every known state is exported as 0, no error was counted.
    let (status, ctype, text) = get_unix(&stack.server, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let s = parse(&text);
    assert_eq!(family_type(&s, "hero_deployer_jobs"), "gauge");
    assert_eq!(
        value(
            &s,
            "hero_deployer_jobs",
            &[("kind", "provision"), ("state", "succeeded")]
        ),
        0.0
    );
    assert_eq!(value(&s, "hero_deployer_vms", &[("state", "ready")]), 0.0);
    assert!(
        !s.iter()
            .any(|x| x["name"] == "hero_deployer_forge_call_errors_total"),
        "{text}"
    );

    // Two users made; a third refused by Forge (alice's email is taken): a counted Forge error.
    let alice = new_user(c, "alice").await;
    new_user(c, "bob").await;
    let refused = c
        .create_user("carol", None, Some("alice@nomail.demo.ourworld.tf"))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // The backend refuses alice's deploy_vm once (a transient error, retried) and bob's three
    // times (the step fails). Test builds only: the fault wrapper of the local backend.
    let hooks = cfg!(feature = "test-hooks");
    set_faults(&faults, serde_json::json!({"deploy_vm_unavailable": 1}));
    let job = c.provision_vm(alice, None).await.unwrap();
    let (job, _) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let bob = c.find_user("bob").await.unwrap().user_id;
    if hooks {
        set_faults(&faults, serde_json::json!({"deploy_vm_unavailable": 3}));
        let job = c.provision_vm(bob, None).await.unwrap();
        let (job, _) = follow(c, job.job_id).await;
        assert_eq!(job.state, JobState::Failed, "{:?}", job.error);
        set_faults(&faults, serde_json::json!({}));
    }
    // One probe round: alice's ready VM answers through its gateway.
    c.check_health(None).await.unwrap();

    let (_, _, text) = get_unix(&stack.server, "/metrics").await;
    let s = parse(&text);
    assert_eq!(
        value(
            &s,
            "hero_deployer_jobs",
            &[("kind", "provision"), ("state", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "hero_deployer_jobs",
            &[("kind", "decommission"), ("state", "succeeded")]
        ),
        0.0
    );
    assert_eq!(value(&s, "hero_deployer_vms", &[("state", "ready")]), 1.0);
    assert_eq!(
        value(&s, "hero_deployer_users", &[("state", "active")]),
        2.0
    );
    assert_eq!(
        value(&s, "hero_deployer_vm_health", &[("state", "healthy")]),
        1.0
    );
    assert_eq!(
        value(&s, "hero_deployer_vm_health", &[("state", "unreachable")]),
        0.0
    );
    // Every provision step of alice's job finished once: one observation per step, plus the
    // steps bob's job passed before deploy_vm failed.
    assert_eq!(
        family_type(&s, "hero_deployer_step_duration_seconds"),
        "histogram"
    );
    let steps = hero_os_tfgrid_deployer_server::provision::steps::PROVISION_STEPS;
    let failing = steps.iter().position(|s| *s == "deploy_vm").unwrap();
    for (i, step) in steps.iter().enumerate() {
        let want = if hooks && i < failing { 2.0 } else { 1.0 };
        assert_eq!(
            value(
                &s,
                "hero_deployer_step_duration_seconds_count",
                &[("kind", "provision"), ("step", step)]
            ),
            want,
            "{step}"
        );
    }
    if hooks {
        assert_eq!(
            value(
                &s,
                "hero_deployer_jobs",
                &[("kind", "provision"), ("state", "failed")]
            ),
            1.0
        );
        // alice: one retry; bob: two retries, then the step failed with the backend's code.
        assert_eq!(
            value(
                &s,
                "hero_deployer_step_retries_total",
                &[("kind", "provision"), ("step", "deploy_vm")]
            ),
            3.0
        );
        assert_eq!(
            value(
                &s,
                "hero_deployer_step_failures_total",
                &[
                    ("kind", "provision"),
                    ("step", "deploy_vm"),
                    ("code", "backend.unavailable")
                ]
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "hero_deployer_backend_call_errors_total",
                &[
                    ("backend", "local"),
                    ("operation", "deploy_vm"),
                    ("code", "backend.unavailable")
                ]
            ),
            4.0
        );
    }
    // carol's row waits, pending, for a repeat `user create` to resume it.
    assert_eq!(
        value(&s, "hero_deployer_users", &[("state", "pending")]),
        1.0
    );
    assert_eq!(
        family_type(&s, "hero_deployer_forge_call_errors"),
        "counter"
    );
    assert_eq!(
        value(
            &s,
            "hero_deployer_forge_call_errors_total",
            &[("operation", "create_user"), ("code", "FRG006_conflict")]
        ),
        1.0
    );
    assert!(
        !text.contains("alice") && !text.contains("carol") && !text.contains("nomail"),
        "no username or email in a scrape: {text}"
    );

    // The TCP listener serves the same figures (it sits behind the SSO edge).
    let addr = tcp_addr(&stack.server);
    let (status, _, tcp_text) = get_tcp(&addr, "/metrics").await;
    assert_eq!(status, 200);
    let t = parse(&tcp_text);
    assert_eq!(
        value(
            &t,
            "hero_deployer_jobs",
            &[("kind", "provision"), ("state", "succeeded")]
        ),
        1.0
    );

    // Decommission: the VM leaves `ready`, a decommission job succeeded.
    let job = c.decommission_vm(alice).await.unwrap();
    let (job, _) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let (_, _, text) = get_unix(&stack.server, "/metrics").await;
    let s = parse(&text);
    assert_eq!(value(&s, "hero_deployer_vms", &[("state", "ready")]), 0.0);
    assert_eq!(
        value(&s, "hero_deployer_vms", &[("state", "decommissioned")]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "hero_deployer_jobs",
            &[("kind", "decommission"), ("state", "succeeded")]
        ),
        1.0
    );
}

/// Following a job that does not exist holds nothing: `job_events` subscribes before it reads, and every unknown id
/// asked for (negative ones, a caller walking ids) used to leave a channel behind for good. Ended jobs' channels go
/// too: after everything, the gauge is back at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_unknown_or_ended_jobs_holds_no_channel() {
    let (stack, _faults) = stack(Vec::new()).await;
    let _reaper = SandboxReaper(local_root(&stack));
    let c = stack.client();
    let channels = |text: &str| value(&parse(text), "hero_deployer_job_event_channels", &[]);
    for job_id in (-50..0).chain(1_000..1_150) {
        let err = c.job_events(job_id, 0, 0).await.unwrap_err();
        assert!(err.to_string().contains("no job"), "{job_id}: {err}");
    }
    let (_, _, text) = get_unix(&stack.server, "/metrics").await;
    assert_eq!(channels(&text), 0.0, "{text}");
    let alice = new_user(c, "alice").await;
    let job = c.provision_vm(alice, None).await.unwrap();
    let (job, _) = follow(c, job.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let (_, _, text) = get_unix(&stack.server, "/metrics").await;
    assert_eq!(channels(&text), 0.0, "{text}");
}
