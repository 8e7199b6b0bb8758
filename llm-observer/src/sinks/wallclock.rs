//! Kernel capture times (CLOCK_MONOTONIC ns, what `bpf_ktime_get_ns` returns) → wall-clock time
//! (Unix ns, RFC 3339) for outputs read by people and other systems: the event log and OTLP spans.
//!
//! The offset between the two clocks is sampled once (a monotonic reading between two realtime
//! readings, so the offset's error is at most half the time the three calls took). A later NTP
//! step would skew converted times by the step, never their differences: durations are always
//! computed from the kernel times themselves.

/// Converts capture times to wall-clock times with one fixed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// Unix time (ns) at monotonic time 0.
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks used here always exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl WallClock {
    /// Samples the offset between CLOCK_REALTIME and CLOCK_MONOTONIC now.
    pub fn sample() -> WallClock {
        let before = clock_ns(libc::CLOCK_REALTIME);
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let after = clock_ns(libc::CLOCK_REALTIME);
        WallClock {
            offset_ns: (before + after) / 2 - mono,
        }
    }

    /// A clock whose wall time is `unix_ns` at monotonic time `mono_ns` (tests).
    pub fn fixed(mono_ns: u64, unix_ns: u64) -> WallClock {
        WallClock {
            offset_ns: i128::from(unix_ns) - i128::from(mono_ns),
        }
    }

    /// Unix time in ns of a capture time (0 if it would precede the epoch).
    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        u64::try_from(i128::from(mono_ns) + self.offset_ns).unwrap_or(0)
    }

    /// RFC 3339 UTC with nanoseconds of a capture time.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        rfc3339(self.unix_ns(mono_ns))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` of a Unix time in ns.
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`,
/// restricted to non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.000000789
        assert_eq!(
            rfc3339(951_827_696_000_000_789),
            "2000-02-29T12:34:56.000000789Z"
        );
        // 2026-12-01T14:46:25.5Z
        assert_eq!(
            rfc3339(1_796_136_385_500_000_000),
            "2026-12-01T14:46:25.500000000Z"
        );
        // The last second of a year.
        assert_eq!(
            rfc3339(1_767_225_599_000_000_000),
            "2025-12-31T23:59:59.000000000Z"
        );
    }

    #[test]
    fn converts_with_the_offset() {
        let c = WallClock::fixed(1_000, 1_700_000_000_000_000_000);
        assert_eq!(c.unix_ns(1_000), 1_700_000_000_000_000_000);
        assert_eq!(c.unix_ns(3_500), 1_700_000_000_000_002_500);
        assert_eq!(WallClock::fixed(1_000, 10).unix_ns(0), 0);
    }

    #[test]
    fn sampled_offset_matches_the_realtime_clock() {
        let c = WallClock::sample();
        let wall = clock_ns(libc::CLOCK_REALTIME);
        let converted = i128::from(c.unix_ns(crate::capture::system::monotonic_ns()));
        // Both readings are within the same few milliseconds.
        assert!(
            (converted - wall).abs() < 50_000_000,
            "{converted} vs {wall}"
        );
    }
}
