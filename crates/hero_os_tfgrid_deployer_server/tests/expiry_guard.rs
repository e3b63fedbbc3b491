//! The expiry sweep reads the expired VMs, then decommissions them one by one; an operator's
//! `vm extend` (or `--never`) in between must win. The condition the decommission's own write checks
//! again (`vms::still_expired`), on a real sqlite database seeded the way provisioning leaves it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_fleet;

use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::error::ServiceError;
use hero_os_tfgrid_deployer_server::provision::vms::still_expired;
use support_fleet::seed_ready_vms;

const NOW: i64 = 1_800_000_000;

#[tokio::test]
async fn a_vm_extended_after_the_sweep_read_it_is_no_longer_expired_for_the_decommission() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("state.db")).unwrap();
    let vms = seed_ready_vms(
        &db,
        1,
        |_| "alice".into(),
        |_| "http://alice.localhost/".into(),
    )
    .await
    .unwrap();
    let user = vms[0].user_id;
    // Warned two days ago (only a warned VM is ever decommissioned: the last case).
    db.write(|conn| -> Result<(), ServiceError> {
        conn.execute("UPDATE vms SET expiry_warned_at = ?1", [NOW - 2 * 86400])?;
        Ok(())
    })
    .await
    .unwrap();
    // (what the row says by the time the decommission's write runs, still expired?)
    let cases: [(&str, &str, bool); 7] = [
        (
            "expired a second ago",
            "UPDATE vms SET expires_at = ?1 - 1",
            true,
        ),
        (
            "expires this second",
            "UPDATE vms SET expires_at = ?1",
            true,
        ),
        (
            "extended by a day",
            "UPDATE vms SET expires_at = ?1 + 86400",
            false,
        ),
        (
            "made never-expiring",
            "UPDATE vms SET expires_at = NULL WHERE ?1 = ?1",
            false,
        ),
        (
            "expired but no longer ready (a decommission started)",
            "UPDATE vms SET expires_at = ?1 - 1, state = 'decommissioning'",
            false,
        ),
        (
            "ready again and expired",
            "UPDATE vms SET expires_at = ?1 - 1, state = 'ready'",
            true,
        ),
        (
            "expired but never warned (the server down through the warning window)",
            "UPDATE vms SET expires_at = ?1 - 1, expiry_warned_at = NULL",
            false,
        ),
    ];
    for (what, sql, want) in cases {
        let got = db
            .write(move |conn| -> Result<bool, ServiceError> {
                conn.execute(sql, [NOW])?;
                Ok(still_expired(conn, user, NOW)?)
            })
            .await
            .unwrap();
        assert_eq!(got, want, "{what}");
    }
}
