//! Timestamps without a date-time dependency: UTC civil time from the Unix
//! clock, in stone's style (`Nov 29 12:40:51.286076`) and RFC 3339.

use std::time::{SystemTime, UNIX_EPOCH};

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    /// 0..=23
    pub hour: u32,
    /// 0..=59
    pub minute: u32,
    /// 0..=59
    pub second: u32,
    /// 0..1_000_000
    pub micros: u32,
}

impl Civil {
    /// The current UTC time.
    pub fn now() -> Civil {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Civil::from_unix(since.as_secs() as i64, since.subsec_micros())
    }

    /// Converts Unix seconds (Howard Hinnant's days-to-civil algorithm).
    pub fn from_unix(secs: i64, micros: u32) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: rem / 3_600,
            minute: rem % 3_600 / 60,
            second: rem % 60,
            micros,
        }
    }

    /// `Nov 29 12:40:51.286076`, the prefix stone puts on every line.
    pub fn stone(&self) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "{} {:2} {:02}:{:02}:{:02}.{:06}",
            MONTHS[(self.month as usize - 1) % 12],
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.micros
        )
    }

    /// `2026-11-29T12:40:51.286076Z`
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.micros
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let t = Civil::from_unix(1_795_956_051, 286_076);
        assert_eq!(t.rfc3339(), "2026-11-29T12:40:51.286076Z");
        assert_eq!(t.stone(), "Nov 29 12:40:51.286076");
        assert_eq!(
            Civil::from_unix(0, 0).rfc3339(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Civil::from_unix(951_782_400, 0).rfc3339(),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
