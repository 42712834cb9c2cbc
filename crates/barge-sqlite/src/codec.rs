//! Text forms of dates, times, timestamps and decimals as SQLite stores them. Parsing accepts the
//! forms SQLite's own date functions accept (`T` or space, optional seconds and fraction, `Z` or a
//! `±HH:MM` offset); formatting writes one canonical form, so that text keys sort chronologically.

use std::fmt::Write;

use chrono::{Datelike, NaiveDate};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_FROM_CE: i32 = 719_163;

fn number(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0')))
}

/// `YYYY-MM-DD` → days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(number(&b[0..4])?).ok()?,
        u32::try_from(number(&b[5..7])?).ok()?,
        u32::try_from(number(&b[8..10])?).ok()?,
    )?;
    Some(date.num_days_from_ce() - UNIX_EPOCH_FROM_CE)
}

/// `HH:MM[:SS[.fraction]]` → microseconds since midnight. More than six fraction digits must be
/// zeros: barge never rounds silently.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 5 || b[2] != b':' {
        return None;
    }
    let (hours, minutes) = (number(&b[0..2])?, number(&b[3..5])?);
    let (mut seconds, mut micros) = (0, 0);
    if b.len() > 5 {
        if b[5] != b':' || b.len() < 8 {
            return None;
        }
        seconds = number(&b[6..8])?;
        if b.len() > 8 {
            if b[8] != b'.' || b.len() == 9 {
                return None;
            }
            let fraction = &b[9..];
            let (kept, dropped) = fraction.split_at(fraction.len().min(6));
            if !dropped.iter().all(|&d| d == b'0') {
                return None;
            }
            micros = number(kept)? * 10i64.pow(6 - kept.len() as u32);
        }
    }
    if hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(((hours * 60 + minutes) * 60 + seconds) * MICROS_PER_SECOND + micros)
}

/// A date, optionally followed by a time and a zone → UTC microseconds since the epoch. Without a
/// zone the value is taken as UTC.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim_end();
    if s.len() < 10 {
        return None;
    }
    let days = i64::from(parse_date(s.get(..10)?)?);
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(days * MICROS_PER_DAY);
    }
    let rest = rest.strip_prefix([' ', 'T'])?;
    let (time, offset_seconds) = match rest.find(['Z', 'z', '+', '-']) {
        None => (rest, 0),
        Some(at) => (&rest[..at], parse_offset(&rest[at..])?),
    };
    let micros = parse_time(time.trim_end())?;
    Some(days * MICROS_PER_DAY + micros - offset_seconds * MICROS_PER_SECOND)
}

fn parse_offset(s: &str) -> Option<i64> {
    if s.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = if s.starts_with('-') { -1 } else { 1 };
    let digits: Vec<u8> = s.bytes().skip(1).filter(|b| *b != b':').collect();
    let (hours, minutes) = match digits.len() {
        2 => (number(&digits)?, 0),
        4 => (number(&digits[..2])?, number(&digits[2..])?),
        _ => return None,
    };
    (hours <= 23 && minutes <= 59).then_some(sign * (hours * 3600 + minutes * 60))
}

/// Appends `YYYY-MM-DD`.
pub fn format_date(days: i32, out: &mut String) {
    match NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_FROM_CE) {
        Some(d) => write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
        None => write!(out, "{days}"),
    }
    .expect("writing to a String");
}

/// Appends `HH:MM:SS`, plus the fraction without trailing zeros when there is one (as PostgreSQL
/// prints it). Trimmed fractions still sort chronologically as text.
pub fn format_time(micros: i64, out: &mut String) {
    let (secs, frac) = (micros / MICROS_PER_SECOND, micros % MICROS_PER_SECOND);
    write!(out, "{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60).expect("writing to a String");
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Appends `YYYY-MM-DD HH:MM:SS[.ffffff]`, plus `+00:00` for zoned columns.
pub fn format_datetime(micros: i64, zoned: bool, out: &mut String) {
    let days = micros.div_euclid(MICROS_PER_DAY);
    format_date(i32::try_from(days).unwrap_or(i32::MAX), out);
    out.push(' ');
    format_time(micros.rem_euclid(MICROS_PER_DAY), out);
    if zoned {
        out.push_str(crate::types::UTC);
    }
}

/// Parses a decimal literal into a mantissa at `scale`, refusing more than `precision` digits and
/// refusing to drop non-zero fraction digits.
pub fn parse_decimal(s: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let t = s.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let well_formed = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(format!("`{s}` is not a decimal number"));
    }
    let scale = usize::try_from(scale).map_err(|_| "negative scales are not supported".to_string())?;
    let (kept, dropped) = frac.split_at(frac.len().min(scale));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!("`{s}` has more than {scale} decimal places"));
    }
    let int = int.trim_start_matches('0');
    if int.len() + scale > usize::from(precision) {
        return Err(format!("`{s}` does not fit DECIMAL({precision},{scale})"));
    }
    let mut mantissa: i128 = 0;
    for b in int.bytes().chain(kept.bytes()).chain(std::iter::repeat_n(b'0', scale - kept.len())) {
        mantissa = mantissa * 10 + i128::from(b - b'0');
    }
    Ok(if negative { -mantissa } else { mantissa })
}

/// Appends a mantissa at `scale` as a decimal literal.
pub fn format_decimal(mantissa: i128, scale: i8, out: &mut String) {
    let digits = mantissa.unsigned_abs().to_string();
    if mantissa < 0 {
        out.push('-');
    }
    let scale = usize::try_from(scale).unwrap_or(0);
    if scale == 0 {
        out.push_str(&digits);
        return;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    out.push_str(int);
    out.push('.');
    out.push_str(frac);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_forms_sqlite_date_functions_accept() {
        let base = parse_datetime("2024-02-29 13:45:10").unwrap();
        assert_eq!(parse_datetime("2024-02-29T13:45:10").unwrap(), base);
        assert_eq!(parse_datetime("2024-02-29T13:45:10Z").unwrap(), base);
        assert_eq!(parse_datetime("2024-02-29 15:45:10+02:00").unwrap(), base);
        assert_eq!(parse_datetime("2024-02-29 13:45:10.000000000").unwrap(), base);
        assert_eq!(parse_datetime("2024-02-29 13:45").unwrap(), base - 10_000_000);
        assert_eq!(parse_datetime("1970-01-01").unwrap(), 0);
        assert_eq!(parse_datetime("1969-12-31 23:59:59.5").unwrap(), -500_000);
    }

    #[test]
    fn refuses_what_it_cannot_keep_exactly() {
        assert_eq!(parse_datetime("2023-02-29 00:00:00"), None);
        assert_eq!(parse_datetime("2024-01-01 24:00:00"), None);
        assert_eq!(parse_datetime("2024-01-01 00:00:00.1234567"), None);
        assert_eq!(parse_datetime("yesterday"), None);
        assert!(parse_decimal("1.234", 10, 2).is_err());
        assert!(parse_decimal("123456", 6, 2).is_err());
        assert!(parse_decimal("1e5", 10, 2).is_err());
    }

    #[test]
    fn decimals_parse_at_their_scale() {
        assert_eq!(parse_decimal("12.3", 12, 2), Ok(1230));
        assert_eq!(parse_decimal("-0.05", 12, 2), Ok(-5));
        assert_eq!(parse_decimal("7", 3, 0), Ok(7));
        assert_eq!(parse_decimal("1.50", 3, 1), Ok(15));
        assert_eq!(parse_decimal(".5", 3, 1), Ok(5));
    }

    proptest! {
        #[test]
        fn datetimes_round_trip(micros in -62_000_000_000_000_000i64..253_000_000_000_000_000, zoned in any::<bool>()) {
            let mut text = String::new();
            format_datetime(micros, zoned, &mut text);
            prop_assert_eq!(parse_datetime(&text), Some(micros), "{}", text);
        }

        #[test]
        fn formatted_datetimes_sort_like_their_values(a in 0i64..4_000_000_000_000_000, b in 0i64..4_000_000_000_000_000) {
            let (mut x, mut y) = (String::new(), String::new());
            format_datetime(a, false, &mut x);
            format_datetime(b, false, &mut y);
            prop_assert_eq!(a.cmp(&b), x.cmp(&y));
        }

        #[test]
        fn decimals_round_trip(mantissa in -999_999_999_999i128..999_999_999_999, scale in 0i8..6) {
            let mut text = String::new();
            format_decimal(mantissa, scale, &mut text);
            prop_assert_eq!(parse_decimal(&text, 18, scale), Ok(mantissa), "{}", text);
        }

        #[test]
        fn dates_round_trip(days in -719_162i32..2_932_896) {
            let mut text = String::new();
            format_date(days, &mut text);
            prop_assert_eq!(parse_date(&text), Some(days));
        }
    }
}
