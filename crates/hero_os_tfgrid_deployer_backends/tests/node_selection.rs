//! Node selection against payloads shaped like gridproxy's `GET nodes` answer
//! (`tests/fixtures/gridproxy_nodes_example.json`, an item from tfgrid-sdk-go's client tests),
//! with variations built here, plus one run through a real local HTTP server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hero_os_tfgrid_deployer_backends::gridproxy::{parse_nodes, GridProxyClient};
use hero_os_tfgrid_deployer_backends::node_selection::{
    free_capacity, select_from_gridproxy, select_node, SelectError,
};
use hero_os_tfgrid_deployer_backends::spec::{VmSpec, GIB};
use serde_json::{json, Value};

const EXAMPLE: &str = include_str!("fixtures/gridproxy_nodes_example.json");

/// The example item, turned into a healthy gateway node with plenty of room, then `edit`ed.
fn node(id: u32, edit: impl FnOnce(&mut Value)) -> Value {
    let mut items: Vec<Value> = serde_json::from_str(EXAMPLE).unwrap();
    let mut n = items.remove(0);
    n["nodeId"] = json!(id);
    n["healthy"] = json!(true);
    n["status"] = json!("up");
    n["publicConfig"]["domain"] = json!(format!("node{id}.grid.tf"));
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
    // Reserves: MRU total/10 (> 2 GiB here), SRU over-committed → 0.
    let free = free_capacity(n);
    assert_eq!(free.mru, 202_802_933_760 - 119_957_094_400 - 20_280_293_376);
    assert_eq!(free.sru, 0);
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
        // 16 GiB total: reserve 2 GiB, used 8 GiB → 6 GiB free < 8 GiB.
        node(50, |n| {
            n["total_resources"]["mru"] = json!(16u64 * GIB);
            n["used_resources"]["mru"] = json!(8u64 * GIB);
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
fn exactly_enough_after_reserves_fits() {
    // SRU: total − used − 20 GiB == 216 GiB exactly.
    let nodes = parse(vec![node(8, |n| {
        n["total_resources"]["sru"] = json!(336u64 * GIB);
        n["used_resources"]["sru"] = json!(100u64 * GIB);
    })]);
    let sel = select_node(&[8], &nodes, &need()).unwrap();
    assert_eq!(sel.node.node_id, 8);
    assert_eq!(sel.headroom, 0.0);
    let nodes = parse(vec![node(8, |n| {
        n["total_resources"]["sru"] = json!(336u64 * GIB - 1);
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
                        Some(mut n) => {
                            // `nodes/{id}` nests capacity.
                            let obj = n.as_object_mut().unwrap();
                            let total = obj.remove("total_resources").unwrap();
                            let used = obj.remove("used_resources").unwrap();
                            obj.insert(
                                "capacity".into(),
                                json!({"total_resources": total, "used_resources": used}),
                            );
                            (StatusCode::OK, n.to_string())
                        }
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

#[tokio::test]
async fn unreachable_gridproxy_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = GridProxyClient::with_base_url(format!("http://{addr}/")).unwrap();
    let err = client.nodes_by_ids(&[1]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}
