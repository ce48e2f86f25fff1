//! ISO-8601 timestamps in the one shape the API and every Segment library use:
//! `YYYY-MM-DDTHH:MM:SS.mmmZ`, always UTC, always 24 bytes.
//!
//! Written by hand rather than through a date crate because it runs on every `track()` call and
//! every request's `sentAt`: this is a few integer divisions and no allocation.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length in bytes of every timestamp [`write_timestamp`] produces.
pub const TIMESTAMP_LEN: usize = 24;

/// Seconds from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar (days × 86 400);
/// shifting the epoch there makes the leap day the last day of the "year" in [`civil_from_days`].
const DAYS_FROM_YEAR_0_MARCH_TO_EPOCH: i64 = 719_468;

/// Earliest and latest instants written; outside them the year would not fit in four digits.
const MIN_UNIX_MILLIS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
const MAX_UNIX_MILLIS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, millisecond precision) to `out`.
///
/// Instants outside years 0000-9999 are clamped to those bounds.
pub fn write_timestamp(t: SystemTime, out: &mut Vec<u8>) {
    let millis = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |m| -m),
    }
    .clamp(MIN_UNIX_MILLIS, MAX_UNIX_MILLIS);
    let days = millis.div_euclid(86_400_000);
    let ms_of_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    let fields = [
        (year, 4),
        (month, 2),
        (day, 2),
        (secs / 3600, 2),
        (secs / 60 % 60, 2),
        (secs % 60, 2),
        (ms_of_day % 1000, 3),
    ];
    let separators = [b'-', b'-', b'T', b':', b':', b'.', b'Z'];
    for ((value, width), sep) in fields.into_iter().zip(separators) {
        push_digits(value, width, out);
        out.push(sep);
    }
}

/// `t` formatted by [`write_timestamp`], as a `String`.
pub fn format_timestamp(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(TIMESTAMP_LEN);
    write_timestamp(t, &mut out);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

fn push_digits(value: i64, width: u32, out: &mut Vec<u8>) {
    let mut divisor = 10_i64.pow(width - 1);
    while divisor > 0 {
        // `value` is non-negative and below 10^width, so each digit is 0..=9.
        out.push(b'0' + (value / divisor % 10) as u8);
        divisor /= 10;
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + DAYS_FROM_YEAR_0_MARCH_TO_EPOCH;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(millis: u64) -> String {
        format_timestamp(UNIX_EPOCH + Duration::from_millis(millis))
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_694_400_123), "2026-11-26T12:00:00.123Z");
        assert_eq!(at(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    /// Days in `month` of `year`, by the Gregorian rule written out plainly: the oracle the
    /// arithmetic of `civil_from_days` is checked against.
    fn month_length(year: i64, month: i64) -> i64 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// The date after `(year, month, day)`.
    fn next_date((year, month, day): (i64, i64, i64)) -> (i64, i64, i64) {
        if day < month_length(year, month) {
            (year, month, day + 1)
        } else if month < 12 {
            (year, month + 1, 1)
        } else {
            (year + 1, 1, 1)
        }
    }

    #[test]
    fn every_day_of_a_leap_cycle_round_trips_month_lengths() {
        // Walk 400 years of days (1970 to 2369: 2000 is a leap year, 2100, 2200 and 2300
        // are not) and check each is the day after the one before, by the plain rule.
        let mut previous = civil_from_days(0);
        assert_eq!(previous, (1970, 1, 1));
        let mut leap_days = 0;
        for day in 1..146_097 {
            let current = civil_from_days(day);
            assert_eq!(current, next_date(previous), "after {previous:?}");
            leap_days += i64::from(current.1 == 2 && current.2 == 29);
            previous = current;
        }
        assert_eq!(previous, (2369, 12, 31));
        assert_eq!(leap_days, 97, "leap days in a 400-year cycle");
        // Before the epoch too.
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }

    #[test]
    fn clamps_and_handles_pre_epoch() {
        assert_eq!(
            format_timestamp(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_timestamp(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(at(1).len(), TIMESTAMP_LEN);
    }
}
