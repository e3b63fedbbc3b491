//! Node selection against payloads shaped like gridproxy's `GET nodes` answer: the old captured
//! item (`tests/fixtures/gridproxy_nodes_example.json`, from tfgrid-sdk-go's client tests) with
//! variations built here, and `tests/fixtures/gridproxy_nodes_current.json` with every field of
//! the current `types.Node` (rented, dedicated, light and feature-less nodes; provenance in
//! `tests/fixtures/tfgrid/PROVENANCE.md`), plus runs through a real local HTTP server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hero_os_tfgrid_deployer_backends::gridproxy::{parse_nodes, GridProxyClient};
use hero_os_tfgrid_deployer_backends::node_selection::{
    exclude_node_after, free_capacity, select_from_gridproxy, select_from_gridproxy_for,
    select_node, select_node_for, FeatureNeeds, Requirements, SelectError,
};
use hero_os_tfgrid_deployer_backends::spec::{VmSpec, GIB};
use hero_os_tfgrid_deployer_backends::BackendError;
use serde_json::{json, Value};

const EXAMPLE: &str = include_str!("fixtures/gridproxy_nodes_example.json");
const CURRENT: &str = include_str!("fixtures/gridproxy_nodes_current.json");
/// A zos 3 node's features (`grid-proxy/pkg/types/validators.go` `Zos3NodesFeatures`).
const ZOS3: [&str; 14] = [
    "zmount",
    "zdb",
    "volume",
    "ipv4",
    "ip",
    "gateway-name-proxy",
    "gateway-fqdn-proxy",
    "qsfs",
    "zlogs",
    "network",
    "zmachine",
    "wireguard",
    "yggdrasil",
    "mycelium",
];

/// The example item, turned into a healthy gateway node with plenty of room, then `edit`ed.
fn node(id: u32, edit: impl FnOnce(&mut Value)) -> Value {
    let mut items: Vec<Value> = serde_json::from_str(EXAMPLE).unwrap();
    let mut n = items.remove(0);
    n["nodeId"] = json!(id);
    n["healthy"] = json!(true);
    n["status"] = json!("up");
    n["publicConfig"]["domain"] = json!(format!("node{id}.grid.tf"));
    n["features"] = json!(ZOS3);
    // The captured item is over-committed on SSD (used > total); give it a sane state.
    n["total_resources"]["sru"] = json!(2048u64 * GIB);
    n["used_resources"]["sru"] = json!(100u64 * GIB);
    edit(&mut n);
    n
}

fn parse(items: Vec<Value>) -> Vec<hero_os_tfgrid_deployer_backends::Node> {
    parse_nodes(&Value::Array(items).to_string()).unwrap()
}

fn need() -> hero_os_tfgrid_deployer_backends::Capacity {
    VmSpec::default().required_capacity()
}

#[test]
fn example_fixture_parses_with_core_fields() {
    let nodes = parse_nodes(EXAMPLE).unwrap();
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n.node_id, 1);
    assert_eq!(n.status, "up");
    assert_eq!(n.total.mru, 202_802_933_760);
    assert_eq!(n.used.mru, 119_957_094_400);
    assert_eq!(n.healthy, None, "the old capture lacks `healthy`");
    // used_* already hold the reserves: free = total − used; SRU over-committed → 0.
    let free = free_capacity(n);
    assert_eq!(free.mru, 202_802_933_760 - 119_957_094_400);
    assert_eq!(free.sru, 0);
    assert_eq!(n.features, None, "the old capture lacks `features`");
    // As captured it is rejected (no health, no domain): the reason says so.
    let err = select_node(&[1], &nodes, &need()).unwrap_err();
    assert!(
        err.to_string()
            .contains("node 1: gridproxy did not report health"),
        "{err}"
    );
}

#[test]
fn picks_most_headroom_and_records_why() {
    let nodes = parse(vec![
        node(1, |n| n["used_resources"]["mru"] = json!(150u64 * GIB)),
        node(8, |n| n["used_resources"]["mru"] = json!(10u64 * GIB)),
        node(13, |_| {}),
        node(50, |n| n["used_resources"]["sru"] = json!(1900u64 * GIB)),
    ]);
    let sel = select_node(&[1, 8, 13, 50], &nodes, &need()).unwrap();
    assert_eq!(sel.node.node_id, 8);
    assert_eq!(sel.domain, "node8.grid.tf");
    assert!(sel.reason.contains("node 8"), "{}", sel.reason);
    let ids: Vec<u32> = sel.rejected.iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&1) && ids.contains(&13) && ids.contains(&50));
}

#[test]
fn ties_break_on_lowest_node_id() {
    let nodes = parse(vec![node(50, |_| {}), node(13, |_| {})]);
    let sel = select_node(&[50, 13], &nodes, &need()).unwrap();
    assert_eq!(sel.node.node_id, 13);
}

#[test]
fn rejects_down_unhealthy_no_domain_and_small_nodes() {
    let nodes = parse(vec![
        node(1, |n| n["status"] = json!("down")),
        node(8, |n| n["healthy"] = json!(false)),
        node(13, |n| n["publicConfig"]["domain"] = json!("")),
        // 16 GiB total, used (contracts + reserve) 10 GiB → 6 GiB free < 8 GiB.
        node(50, |n| {
            n["total_resources"]["mru"] = json!(16u64 * GIB);
            n["used_resources"]["mru"] = json!(10u64 * GIB);
        }),
        node(77, |_| {}),
    ]);
    let sel = select_node(&[1, 8, 13, 50, 77], &nodes, &need()).unwrap();
    assert_eq!(sel.node.node_id, 77);
    let why: HashMap<u32, String> = sel.rejected.into_iter().collect();
    assert!(why[&1].contains("down"), "{}", why[&1]);
    assert!(why[&8].contains("not healthy"), "{}", why[&8]);
    assert!(why[&13].contains("no gateway domain"), "{}", why[&13]);
    assert!(
        why[&50].contains("memory (MRU) free 6.0 GiB < needed 8.0 GiB"),
        "{}",
        why[&50]
    );
}

#[test]
fn exactly_enough_fits() {
    // SRU: total − used == 216 GiB exactly (used already holds the 20 GiB reserve).
    let nodes = parse(vec![node(8, |n| {
        n["total_resources"]["sru"] = json!(316u64 * GIB);
        n["used_resources"]["sru"] = json!(100u64 * GIB);
    })]);
    let sel = select_node(&[8], &nodes, &need()).unwrap();
    assert_eq!(sel.node.node_id, 8);
    assert_eq!(sel.headroom, 0.0);
    let nodes = parse(vec![node(8, |n| {
        n["total_resources"]["sru"] = json!(316u64 * GIB - 1);
        n["used_resources"]["sru"] = json!(100u64 * GIB);
    })]);
    let err = select_node(&[8], &nodes, &need()).unwrap_err();
    assert!(err.to_string().contains("SSD (SRU)"), "{err}");
}

#[test]
fn all_rejected_lists_every_node_and_why() {
    let nodes = parse(vec![
        node(1, |n| n["status"] = json!("standby")),
        node(8, |n| n["healthy"] = json!(false)),
        node(13, |n| n["publicConfig"]["domain"] = json!("")),
    ]);
    let err = select_node(&[1, 8, 13, 50], &nodes, &need()).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.rejected.len(), 4);
    for expected in [
        "node 1: status is \"standby\"",
        "node 8: not healthy",
        "node 13: no gateway domain",
        "node 50: not known to gridproxy",
    ] {
        assert!(msg.contains(expected), "missing {expected:?} in {msg}");
    }
}

/// The query parameters gridproxy's `NodeFilter` accepts that this client may send. The real
/// server answers 400 to unknown ones, so the stand-in does too.
const KNOWN_PARAMS: [&str; 2] = ["node_ids", "size"];

/// A `nodes` list item as `nodes/{id}` answers it: capacity nested under `capacity`.
fn nested(mut n: Value) -> Value {
    let obj = n.as_object_mut().unwrap();
    let total = obj.remove("total_resources").unwrap();
    let used = obj.remove("used_resources").unwrap();
    obj.insert(
        "capacity".into(),
        json!({"total_resources": total, "used_resources": used}),
    );
    n
}

async fn serve(items: Vec<Value>) -> String {
    let list = items.clone();
    let app = Router::new()
        .route(
            "/nodes",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let list = list.clone();
                async move {
                    if let Some(bad) = q.keys().find(|k| !KNOWN_PARAMS.contains(&k.as_str())) {
                        return (StatusCode::BAD_REQUEST, format!("unknown param {bad}"));
                    }
                    let ids: Vec<u64> = q
                        .get("node_ids")
                        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
                        .unwrap_or_default();
                    let out: Vec<Value> = list
                        .into_iter()
                        .filter(|n| ids.contains(&n["nodeId"].as_u64().unwrap()))
                        .collect();
                    (StatusCode::OK, Value::Array(out).to_string())
                }
            }),
        )
        .route(
            "/nodes/{id}",
            get(move |Path(id): Path<u64>| {
                let items = items.clone();
                async move {
                    match items.into_iter().find(|n| n["nodeId"].as_u64() == Some(id)) {
                        Some(n) => (StatusCode::OK, nested(n).to_string()),
                        None => (StatusCode::NOT_FOUND, "node not found".to_string()),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn selects_through_a_real_http_server() {
    let base = serve(vec![
        node(1, |n| n["status"] = json!("down")),
        node(8, |_| {}),
        node(13, |n| n["used_resources"]["mru"] = json!(150u64 * GIB)),
        node(99, |_| {}),
    ])
    .await;
    let client = GridProxyClient::with_base_url(base).unwrap();

    let one = client.node(13).await.unwrap();
    assert_eq!(one.used.mru, 150 * GIB, "nested capacity is read");
    let missing = client.node(4242).await.unwrap_err();
    assert_eq!(missing.code(), "gridproxy.node_not_found");

    let sel = select_from_gridproxy(&client, &[1, 8, 13, 50], &need())
        .await
        .unwrap();
    assert_eq!(sel.node.node_id, 8);
    let why: HashMap<u32, String> = sel.rejected.into_iter().collect();
    assert!(why[&50].contains("not known"));
    assert!(why[&1].contains("down"));

    let base = serve(vec![node(1, |n| n["healthy"] = json!(false))]).await;
    let client = GridProxyClient::with_base_url(base).unwrap();
    let err = select_from_gridproxy(&client, &[1], &need())
        .await
        .unwrap_err();
    assert!(matches!(err, SelectError::NoCandidate(_)));
    assert!(!err.is_transient());
    assert_eq!(err.code(), "select.no_candidate");
}

/// One node gridproxy describes oddly (a farm id past u32, a fee that is a string) is left out as not known; the
/// others are still read and chosen. Before, the whole list failed to decode and no deploy could proceed.
#[tokio::test]
async fn one_unreadable_node_does_not_fail_the_list() {
    let base = serve(vec![
        node(1, |n| n["farmId"] = json!(1u64 << 40)),
        node(2, |n| n["extraFee"] = json!("lots")),
        node(8, |_| {}),
    ])
    .await;
    let client = GridProxyClient::with_base_url(base).unwrap();
    let sel = select_from_gridproxy(&client, &[1, 2, 8], &need())
        .await
        .unwrap();
    assert_eq!(sel.node.node_id, 8);
    let why: HashMap<u32, String> = sel.rejected.into_iter().collect();
    assert!(
        why[&1].contains("not known") && why[&2].contains("not known"),
        "{why:?}"
    );
}

/// `nodes/{id}` answering about another node is an error, not a fresh view of the one asked.
#[tokio::test]
async fn a_node_answer_about_another_node_is_refused() {
    let app = Router::new().route(
        "/nodes/{id}",
        get(|| async { nested(node(99, |_| {})).to_string() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = GridProxyClient::with_base_url(format!("http://{addr}")).unwrap();
    let err = client.node(8).await.unwrap_err();
    assert!(err.to_string().contains("about node 99"), "{err}");
}

#[tokio::test]
async fn unreachable_gridproxy_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = GridProxyClient::with_base_url(format!("http://{addr}/")).unwrap();
    let err = client.nodes_by_ids(&[1]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

/// The server's `free_*` columns (`setup.sql` `resources_cache`): total − Σcontracts − reserve,
/// with the reserve max(total/10, 2 GiB) for MRU, 20 GiB for SRU, none for HRU.
fn server_free(total: u64, contracts: u64, kind: &str) -> i128 {
    let reserve = match kind {
        "mru" => (total / 10).max(2 * GIB),
        "sru" => 20 * GIB,
        _ => 0,
    };
    total as i128 - contracts as i128 - reserve as i128
}

#[test]
fn free_capacity_equals_what_the_server_computes() {
    // The fixture: its used_* are the server's (Σcontracts + reserve), _contracts the Σ.
    let raw: Vec<Value> = serde_json::from_str(CURRENT).unwrap();
    let nodes = parse_nodes(CURRENT).unwrap();
    assert_eq!(raw.len(), nodes.len());
    for (r, n) in raw.iter().zip(&nodes) {
        let free = free_capacity(n);
        for (kind, got) in [("mru", free.mru), ("sru", free.sru), ("hru", free.hru)] {
            let total = r["total_resources"][kind].as_u64().unwrap();
            let contracts = r["_contracts"][kind].as_u64().unwrap();
            let want = server_free(total, contracts, kind).max(0) as u64;
            assert_eq!(got, want, "node {} {kind}", n.node_id);
        }
    }
    // And over a grid of totals and loads, including over-commitment (server column < 0 → 0).
    for total in [
        4 * GIB,
        16 * GIB,
        20 * GIB + 1,
        64 * GIB,
        1024 * GIB,
        5000 * GIB,
    ] {
        for contracts in [0, GIB, 8 * GIB, total / 2, total, total + GIB] {
            let used_mru = contracts + (total / 10).max(2 * GIB);
            let used_sru = contracts + 20 * GIB;
            let n = &parse(vec![node(8, |n| {
                n["total_resources"] = json!({"cru": 8, "mru": total, "sru": total, "hru": total});
                n["used_resources"] =
                    json!({"cru": 1, "mru": used_mru, "sru": used_sru, "hru": contracts});
            })])[0];
            let free = free_capacity(n);
            assert_eq!(
                free.mru as i128,
                server_free(total, contracts, "mru").max(0),
                "{total} {contracts}"
            );
            assert_eq!(
                free.sru as i128,
                server_free(total, contracts, "sru").max(0),
                "{total} {contracts}"
            );
            assert_eq!(
                free.hru as i128,
                server_free(total, contracts, "hru").max(0),
                "{total} {contracts}"
            );
        }
    }
}

fn why_each(req: &Requirements) -> HashMap<u32, Option<String>> {
    let nodes = parse_nodes(CURRENT).unwrap();
    let ids: Vec<u32> = nodes.iter().map(|n| n.node_id).collect();
    let mut out = HashMap::new();
    for id in ids {
        let r = select_node_for(&[id], &nodes, req);
        out.insert(id, r.err().map(|e| e.to_string()));
    }
    out
}

#[test]
fn rented_dedicated_light_and_featureless_nodes_are_told_apart() {
    let why = why_each(&Requirements::new(need()));
    let expect: &[(u32, Option<&str>)] = &[
        (8, None),
        (
            13,
            Some("lacks node feature(s): zmachine (only zmachine-light: a zos-light node"),
        ),
        (50, Some("rented by twin 777")),
        (51, Some("in a dedicated farm")),
        (52, Some("a dedicated node (extra fee)")),
        (53, Some("lacks node feature(s): gateway-name-proxy")),
        (54, Some("gridproxy did not report the node's features")),
        (55, None),
        (
            56,
            Some("memory (MRU) free 8.0 GiB < needed 8.0 GiB (8589934591 < 8589934592 bytes)"),
        ),
        (57, Some("not healthy")),
        (58, Some("status is \"standby\"")),
    ];
    assert_eq!(why.len(), expect.len());
    for (id, want) in expect {
        match (want, &why[id]) {
            (None, None) => {}
            (Some(w), Some(got)) => assert!(got.contains(w), "node {id}: {got}"),
            (w, got) => panic!("node {id}: wanted {w:?}, got {got:?}"),
        }
    }

    // Our own rented node is available to us; a provider with zos-light support takes node 13.
    let mut req = Requirements::new(need());
    req.twin_id = Some(777);
    req.features = FeatureNeeds { light_ok: true };
    let why = why_each(&req);
    assert_eq!(why[&50], None);
    assert_eq!(why[&13], None);
    req.twin_id = Some(778);
    assert!(why_each(&req)[&50]
        .as_deref()
        .unwrap()
        .contains("not the deployer's twin 778"));

    // A failed deploy excludes its node on the retry; selection moves on.
    let nodes = parse_nodes(CURRENT).unwrap();
    let mut req = Requirements::new(need());
    let first = select_node_for(&[8, 55], &nodes, &req).unwrap();
    assert_eq!(first.node.node_id, 8);
    req.excluded.push(8);
    let retry = select_node_for(&[8, 55], &nodes, &req).unwrap();
    assert_eq!(retry.node.node_id, 55);
    assert!(retry
        .rejected
        .iter()
        .any(|(id, why)| *id == 8 && why.contains("a deploy on it failed earlier")));
    req.excluded.push(55);
    let err = select_node_for(&[8, 55], &nodes, &req).unwrap_err();
    assert_eq!(err.rejected.len(), 2);
}

#[tokio::test]
async fn selects_from_the_current_fixture_through_a_real_http_server() {
    let items: Vec<Value> = serde_json::from_str(CURRENT).unwrap();
    let ids: Vec<u32> = items
        .iter()
        .map(|n| n["nodeId"].as_u64().unwrap() as u32)
        .collect();
    let client = GridProxyClient::with_base_url(serve(items).await).unwrap();
    let mut req = Requirements::new(need());
    req.excluded = vec![8];
    let sel = select_from_gridproxy_for(&client, &ids, &req)
        .await
        .unwrap();
    assert_eq!(sel.node.node_id, 55);
    assert_eq!(sel.domain, "gent55.grid.tf");
    assert_eq!(sel.rejected.len(), ids.len() - 1);
}

#[test]
fn which_deploy_failures_exclude_the_node() {
    let tool = BackendError::ToolFailed {
        tool: "tofu apply".into(),
        status: "exit status: 1".into(),
        tail: vec!["Error: node 8 is not reachable".into()],
        transient: false,
    };
    let timeout = BackendError::Timeout {
        op: "apply".into(),
        detail: "x".into(),
    };
    assert!(exclude_node_after(&tool));
    assert!(exclude_node_after(&timeout));
    for ours in [
        BackendError::Config("no mnemonic".into()),
        BackendError::InvalidName("x".into()),
        BackendError::NameTaken {
            label: "a".into(),
            by: String::new(),
        },
    ] {
        assert!(!exclude_node_after(&ours), "{ours}");
    }
}

/// A hostile or broken gridproxy mirror (it is a public third-party service): an answer that never ends is cut at
/// the cap instead of growing the deployer's memory, and an error body reaches the error only as a short
/// printable excerpt — no terminal escapes, no line breaks, not a megabyte of text. Before, `text()` read
/// everything and the first 300 characters went into the error verbatim.
#[tokio::test]
async fn a_hostile_gridproxy_cannot_flood_memory_or_the_operators_terminal() {
    use axum::body::{Body, Bytes};
    let endless = || {
        Body::from_stream(futures::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(Bytes::from(vec![b' '; 64 * 1024]))
        }))
    };
    let app = Router::new()
        .route("/nodes/{id}", get(move || async move { endless() }))
        .route(
            "/nodes",
            get(|| async {
                let mut body =
                    "\u{1b}[2J\u{1b}]0;pwned\u{7}busy\r\nretry later \u{202e}".to_string();
                body.push_str(&"x".repeat(1 << 20));
                (StatusCode::SERVICE_UNAVAILABLE, body)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = GridProxyClient::with_base_url(format!("http://{addr}")).unwrap();

    let err = client.node(1).await.unwrap_err();
    assert_eq!(err.code(), "gridproxy.decode", "{err}");
    assert!(err.to_string().contains("longer than"), "{err}");

    let err = client.nodes_by_ids(&[1]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(text.contains("busy retry later"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{text:?}"
    );
    assert!(text.chars().count() < 400, "{} chars", text.chars().count());
}
