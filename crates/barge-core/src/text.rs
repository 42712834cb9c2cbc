//! Text forms of dates, times, timestamps, intervals and decimals, shared by engines that move
//! values as text (SQLite storage, MySQL's text protocol and LOAD DATA). Parsing accepts the common
//! ISO forms (`T` or space, optional seconds and fraction, `Z` or a `±HH:MM` offset); formatting
//! writes one canonical form, so that text keys sort chronologically. Pure functions, no I/O.

const MICROS_PER_SECOND: i64 = 1_000_000;
/// The offset written after zoned timestamps (values are normalised to UTC).
pub const UTC_OFFSET: &str = "+00:00";
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 of a proleptic Gregorian date, or `None` for an invalid date
/// (integer arithmetic after H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1] {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The (year, month, day) of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Appends `value` as exactly `width` zero-padded digits (no `fmt` machinery: this runs per value).
fn push_digits(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.push_str(std::str::from_utf8(&digits[..width]).expect("ASCII digits"));
}

fn number(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0')))
}

/// Length of the date at the start of `s`: `[-]YYYY[Y…]-MM-DD` (years beyond four digits and
/// before year 1, as PostgreSQL allows, keep their full width and sign).
fn date_len(s: &[u8]) -> Option<usize> {
    let sign = usize::from(s.first() == Some(&b'-'));
    let year_digits = s[sign..].iter().take_while(|b| b.is_ascii_digit()).count();
    (year_digits >= 4).then_some(sign + year_digits + 6)
}

/// `[-]YYYY-MM-DD` → days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if date_len(b)? != b.len() {
        return None;
    }
    let (negative, body) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let n = body.len();
    if body[n - 6] != b'-' || body[n - 3] != b'-' {
        return None;
    }
    let year = number(&body[..n - 6])?;
    let days = days_from_civil(
        if negative { -year } else { year },
        u32::try_from(number(&body[n - 5..n - 3])?).ok()?,
        u32::try_from(number(&body[n - 2..])?).ok()?,
    )?;
    i32::try_from(days).ok()
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
    let date_end = date_len(s.as_bytes())?;
    let days = i64::from(parse_date(s.get(..date_end)?)?);
    let rest = &s[date_end..];
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
    let (year, month, day) = civil_from_days(i64::from(days));
    if year < 0 {
        out.push('-');
    }
    let year = year.unsigned_abs();
    push_digits(out, year, year.checked_ilog10().map_or(1, |d| d as usize + 1).max(4));
    out.push('-');
    push_digits(out, u64::from(month), 2);
    out.push('-');
    push_digits(out, u64::from(day), 2);
}

/// Appends `HH:MM:SS`, plus the fraction without trailing zeros when there is one (as PostgreSQL
/// prints it). Trimmed fractions still sort chronologically as text.
pub fn format_time(micros: i64, out: &mut String) {
    let (secs, frac) = ((micros / MICROS_PER_SECOND) as u64, (micros % MICROS_PER_SECOND) as u64);
    push_digits(out, secs / 3600, 2);
    out.push(':');
    push_digits(out, secs / 60 % 60, 2);
    out.push(':');
    push_digits(out, secs % 60, 2);
    push_fraction(frac, out);
}

/// Appends `.ffffff` for a non-zero count of microseconds, trailing zeros trimmed.
fn push_fraction(mut micros: u64, out: &mut String) {
    if micros == 0 {
        return;
    }
    let mut width = 6;
    while micros.is_multiple_of(10) {
        micros /= 10;
        width -= 1;
    }
    out.push('.');
    push_digits(out, micros, width);
}

/// Appends `YYYY-MM-DD HH:MM:SS[.ffffff]`, plus `+00:00` for zoned columns.
pub fn format_datetime(micros: i64, zoned: bool, out: &mut String) {
    let days = micros.div_euclid(MICROS_PER_DAY);
    format_date(i32::try_from(days).unwrap_or(i32::MAX), out);
    out.push(' ');
    format_time(micros.rem_euclid(MICROS_PER_DAY), out);
    if zoned {
        out.push_str(UTC_OFFSET);
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
    let scale = usize::try_from(scale).unwrap_or(0);
    // Digits of |mantissa|, least significant first, padded so there is one before the point.
    let mut digits = [b'0'; 40];
    let (mut wide, mut len) = (mantissa.unsigned_abs(), 0);
    // u128 division is a library call per digit: only the digits that keep the rest above a u64
    // take it (most mantissas fit a u64 from the start).
    while wide > u128::from(u64::MAX) {
        digits[len] = b'0' + (wide % 10) as u8;
        wide /= 10;
        len += 1;
    }
    let mut rest = u64::try_from(wide).expect("at most u64::MAX");
    while rest > 0 || len <= scale {
        digits[len] = b'0' + (rest % 10) as u8;
        rest /= 10;
        len += 1;
    }
    if mantissa < 0 {
        out.push('-');
    }
    for i in (0..len).rev() {
        if i + 1 == scale {
            out.push('.');
        }
        out.push(char::from(digits[i]));
    }
}

/// The mantissa at `scale` of a REAL read from a DECIMAL(p,s) column. The REAL stands for the
/// decimal it was rounded from; scaling and rounding recovers it exactly while the result is far
/// below 2^53, the formatted route (exact decimal expansion) covers the rest.
pub fn decimal_from_real(x: f64, precision: u8, scale: i8) -> Result<i128, String> {
    let scaled = x * 10f64.powi(i32::from(scale));
    if scaled.is_finite() && scaled.abs() < 1e15 {
        let mantissa = scaled.round() as i128;
        return if mantissa.unsigned_abs() < 10u128.pow(u32::from(precision)) {
            Ok(mantissa)
        } else {
            Err(format!("{x} does not fit DECIMAL({precision},{scale})"))
        };
    }
    parse_decimal(&format!("{x:.*}", usize::try_from(scale).unwrap_or(0)), precision, scale)
}

/// The mantissa at `scale` of an INTEGER read from a DECIMAL(p,s) column.
pub fn decimal_from_integer(i: i64, precision: u8, scale: i8) -> Result<i128, String> {
    let mantissa = i128::from(i) * 10i128.pow(u32::try_from(scale).unwrap_or(0));
    if mantissa.unsigned_abs() < 10u128.pow(u32::from(precision)) {
        Ok(mantissa)
    } else {
        Err(format!("{i} does not fit DECIMAL({precision},{scale})"))
    }
}

/// Appends an interval as `M months D days S seconds` (each part signed, seconds with up to six
/// decimals), a form PostgreSQL's interval input accepts as it is.
pub fn format_interval(months: i32, days: i32, micros: i64, out: &mut String) {
    out.push_str(&format!("{months} months {days} days "));
    if micros < 0 {
        out.push('-');
    }
    let abs = micros.unsigned_abs();
    out.push_str(&(abs / MICROS_PER_SECOND as u64).to_string());
    push_fraction(abs % MICROS_PER_SECOND as u64, out);
    out.push_str(" seconds");
}

/// Parses what [`format_interval`] writes: `(months, days, microseconds)`.
pub fn parse_interval(s: &str) -> Option<(i32, i32, i64)> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let [months, "months", days, "days", seconds, "seconds"] = words.as_slice() else {
        return None;
    };
    let (negative, seconds) = match seconds.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, *seconds),
    };
    let (whole, frac) = seconds.split_once('.').unwrap_or((seconds, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = whole.parse::<i64>().ok()?.checked_mul(MICROS_PER_SECOND)?
        + if frac.is_empty() { 0 } else { number(frac.as_bytes())? * 10i64.pow(6 - frac.len() as u32) };
    Some((months.parse().ok()?, days.parse().ok()?, if negative { -micros } else { micros }))
}

/// A count as people read it, the one number format of barge's messages: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
        fn datetimes_round_trip(micros in -210_000_000_000_000_000i64..9_200_000_000_000_000_000, zoned in any::<bool>()) {
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
        fn reals_in_decimal_columns_recover_the_decimal(mantissa in -99_999_999_999_999i64..99_999_999_999_999, scale in 0i8..5) {
            let mut text = String::new();
            format_decimal(i128::from(mantissa), scale, &mut text);
            let stored: f64 = text.parse().unwrap(); // what NUMERIC affinity keeps
            prop_assert_eq!(decimal_from_real(stored, 18, scale), Ok(i128::from(mantissa)), "{}", text);
        }

        #[test]
        fn wide_decimals_round_trip(mantissa in (i128::MIN + 1)..=i128::MAX, scale in 0i8..38) {
            let mut text = String::new();
            format_decimal(mantissa, scale, &mut text);
            prop_assert_eq!(parse_decimal(&text, 39, scale), Ok(mantissa), "{}", text);
        }

        #[test]
        fn decimals_round_trip(mantissa in -999_999_999_999i128..999_999_999_999, scale in 0i8..6) {
            let mut text = String::new();
            format_decimal(mantissa, scale, &mut text);
            prop_assert_eq!(parse_decimal(&text, 18, scale), Ok(mantissa), "{}", text);
        }

        #[test]
        fn intervals_round_trip(months in any::<i32>(), days in any::<i32>(), micros in any::<i64>()) {
            let mut text = String::new();
            format_interval(months, days, micros, &mut text);
            prop_assert_eq!(parse_interval(&text), Some((months, days, micros)), "{}", text);
        }

        #[test]
        fn dates_round_trip(days in -2_451_545i32..2_147_483_494) {
            let mut text = String::new();
            format_date(days, &mut text);
            prop_assert_eq!(parse_date(&text), Some(days));
        }
    }
}
