//! Timestamps for humans, without a date library: UTC civil time from Unix seconds.

/// `2026-11-22 18:32:05 UTC` from Unix seconds: to the second, because the audit log orders
/// events that happen within one minute.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Same, from Unix milliseconds, with seconds.
pub fn utc_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `850 ms`, `3.2 s`, `2 min 5 s`.
pub fn duration_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Now, in Unix seconds, by this process's clock (the dashboard's "time left" and its
/// "expiring within" filter; the server decides expiry by its own).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What is left until `at`, coarse as a person reads it: `12 d left` (to the nearest day, so
/// a VM just extended to 35 days does not read 34), `5 h left`, `40 min left`, or `expired`.
pub fn left(at: i64, now: i64) -> String {
    let s = at - now;
    if s <= 0 {
        "expired".into()
    } else if s >= 2 * 86_400 {
        format!("{} d left", (s + 43_200) / 86_400)
    } else if s >= 3_600 {
        format!("{} h left", s / 3_600)
    } else {
        format!("{} min left", (s / 60).max(1))
    }
}

/// Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_reads_coarsely_and_never_negative() {
        let now = 1_000_000;
        assert_eq!(left(now - 5, now), "expired");
        assert_eq!(left(now, now), "expired");
        assert_eq!(left(now + 30, now), "1 min left");
        assert_eq!(left(now + 40 * 60, now), "40 min left");
        assert_eq!(left(now + 5 * 3600 + 59, now), "5 h left");
        assert_eq!(left(now + 47 * 3600, now), "47 h left");
        assert_eq!(left(now + 12 * 86_400 + 7, now), "12 d left");
        assert_eq!(left(now + 35 * 86_400 - 60, now), "35 d left");
        assert_eq!(left(now + 3 * 86_400 + 13 * 3600, now), "4 d left");
    }

    #[test]
    fn formats() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_372_325), "2026-11-22 18:32:05 UTC");
        assert_eq!(utc_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(3_250), "3.2 s");
        assert_eq!(duration_ms(125_000), "2 min 5 s");
    }
}
