//! PostgreSQL's binary formats, as COPY carries them: framing, NUMERIC, epochs, arrays.

/// The 11-byte signature, then flags (0) and header-extension length (0).
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A tuple with field count -1 ends the data.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_DAYS: i32 = 10_957;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

pub fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}
pub fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
pub fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
pub fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// A NUMERIC value in PostgreSQL's binary layout.
#[derive(Debug, PartialEq, Eq)]
pub struct Numeric<'a> {
    pub sign: u16,
    pub weight: i16,
    pub dscale: u16,
    /// Base-10000 digits, big-endian i16 pairs.
    pub digits: &'a [u8],
}

impl<'a> Numeric<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, String> {
        if b.len() < 8 {
            return Err("truncated numeric".into());
        }
        let ndigits = usize::try_from(be_i16(b)).map_err(|_| "negative numeric digit count")?;
        if b.len() != 8 + 2 * ndigits {
            return Err("numeric length does not match its digit count".into());
        }
        Ok(Numeric { weight: be_i16(&b[2..]), sign: be_u16(&b[4..]), dscale: be_u16(&b[6..]), digits: &b[8..] })
    }

    fn digit(&self, i: usize) -> i32 {
        i32::from(be_i16(&self.digits[2 * i..]))
    }

    fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }

    fn special(&self) -> Option<&'static str> {
        match self.sign {
            NUMERIC_NAN => Some("NaN"),
            NUMERIC_PINF => Some("Infinity"),
            NUMERIC_NINF => Some("-Infinity"),
            _ => None,
        }
    }

    /// The value's mantissa at `scale`, when it is finite and fits without rounding.
    pub fn to_i128(&self, scale: i8) -> Result<i128, String> {
        if let Some(special) = self.special() {
            return Err(format!("{special} cannot be stored in an Arrow decimal"));
        }
        let mut mantissa: i128 = 0;
        for i in 0..self.ndigits() {
            let exponent = 4 * (i32::from(self.weight) - i as i32) + i32::from(scale);
            // A base-10000 digit: below the scale it must divide out (in 32 bits, not 128), and
            // more than 4 decimal places below it only 0 does.
            let digit = u32::try_from(self.digit(i)).map_err(|_| "malformed numeric digit")?;
            let term = match exponent {
                0.. => 10i128.checked_pow(exponent as u32).and_then(|p| i128::from(digit).checked_mul(p)),
                -4..0 => {
                    let divisor = 10u32.pow(exponent.unsigned_abs());
                    (digit % divisor == 0).then_some(i128::from(digit / divisor))
                }
                _ => (digit == 0).then_some(0),
            };
            mantissa = term.and_then(|t| mantissa.checked_add(t)).ok_or("numeric does not fit its declared scale")?;
        }
        Ok(if self.sign == NUMERIC_NEG { -mantissa } else { mantissa })
    }

    /// PostgreSQL's own text form (`-12.340`, `NaN`, `Infinity`).
    pub fn to_text(&self, out: &mut String) {
        if let Some(special) = self.special() {
            out.push_str(special);
            return;
        }
        if self.sign == NUMERIC_NEG {
            out.push('-');
        }
        let weight = i32::from(self.weight);
        if weight < 0 {
            out.push('0');
        } else {
            for i in 0..=weight as usize {
                let d = if i < self.ndigits() { self.digit(i) } else { 0 };
                if i == 0 {
                    out.push_str(&d.to_string());
                } else {
                    out.push_str(&format!("{d:04}"));
                }
            }
        }
        if self.dscale > 0 {
            out.push('.');
            let mut fraction = String::new();
            let mut group = weight + 1;
            while fraction.len() < usize::from(self.dscale) {
                let d = usize::try_from(group).ok().filter(|&g| g < self.ndigits()).map_or(0, |g| self.digit(g));
                if group >= 0 {
                    fraction.push_str(&format!("{d:04}"));
                } else {
                    fraction.push_str("0000");
                }
                group += 1;
            }
            fraction.truncate(usize::from(self.dscale));
            out.push_str(&fraction);
        }
    }
}

/// Writes a NUMERIC field body (without its length) from decimal digits: `int_digits` before the
/// point, `frac_digits` after it (ASCII). `dscale` is the number of fraction digits displayed.
pub fn put_numeric_digits(negative: bool, int_digits: &[u8], frac_digits: &[u8], out: &mut Vec<u8>) {
    let int_digits = {
        let first = int_digits.iter().position(|&d| d != b'0').unwrap_or(int_digits.len());
        &int_digits[first..]
    };
    let dscale = frac_digits.len();
    // Base-10000 groups aligned on the decimal point.
    let lead = (4 - int_digits.len() % 4) % 4;
    let mut groups: Vec<i16> = Vec::with_capacity((int_digits.len() + frac_digits.len()) / 4 + 2);
    let mut acc = 0i16;
    let mut n = lead;
    for &d in int_digits {
        acc = acc * 10 + i16::from(d - b'0');
        n += 1;
        if n == 4 {
            groups.push(acc);
            (acc, n) = (0, 0);
        }
    }
    let int_groups = groups.len() as i32;
    for &d in frac_digits {
        acc = acc * 10 + i16::from(d - b'0');
        n += 1;
        if n == 4 {
            groups.push(acc);
            (acc, n) = (0, 0);
        }
    }
    if n > 0 {
        for _ in n..4 {
            acc *= 10;
        }
        groups.push(acc);
    }
    let mut weight = int_groups - 1;
    let leading_zeros = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading_zeros);
    weight -= leading_zeros as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign = if negative && !groups.is_empty() { NUMERIC_NEG } else { NUMERIC_POS };
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(dscale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// Writes a NUMERIC body for `mantissa × 10^-scale`.
pub fn put_numeric_i128(mantissa: i128, scale: i8, out: &mut Vec<u8>) {
    let scale = usize::try_from(scale).unwrap_or(0);
    let mut digits = [b'0'; 48];
    let (mut rest, mut len) = (mantissa.unsigned_abs(), 0);
    while rest > 0 || len <= scale {
        digits[47 - len] = b'0' + (rest % 10) as u8;
        rest /= 10;
        len += 1;
    }
    let all = &digits[48 - len..];
    let (int, frac) = all.split_at(len - scale);
    put_numeric_digits(mantissa < 0, int, frac, out);
}

/// Writes a NUMERIC body from text in PostgreSQL's form (`-12.5`, `NaN`, `Infinity`, `1e3`).
pub fn put_numeric_text(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let t = text.trim();
    let special = match t.to_ascii_lowercase().as_str() {
        "nan" => Some(NUMERIC_NAN),
        "infinity" | "+infinity" | "inf" => Some(NUMERIC_PINF),
        "-infinity" | "-inf" => Some(NUMERIC_NINF),
        _ => None,
    };
    if let Some(sign) = special {
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        return Ok(());
    }
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| format!("`{text}` is not a number"))?),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a number"));
    }
    // Apply the exponent by moving the point.
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    let mut point = int.len() as i64 + i64::from(exponent);
    if point < 0 {
        let pad = (-point) as usize;
        digits.splice(0..0, std::iter::repeat_n(b'0', pad));
        point = 0;
    }
    let point = point as usize;
    if point > digits.len() {
        digits.resize(point, b'0');
    }
    let (i, f) = digits.split_at(point);
    put_numeric_digits(negative, i, f, out);
    Ok(())
}

/// Formats 16 bytes as a lower-case hyphenated UUID.
pub fn uuid_text(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// Parses a UUID in any of PostgreSQL's accepted forms (hyphens optional, braces, any case).
pub fn uuid_bytes(text: &str) -> Result<[u8; 16], String> {
    let hex: Vec<u8> = text.bytes().filter(|b| !matches!(b, b'-' | b'{' | b'}')).collect();
    if hex.len() != 32 {
        return Err(format!("`{text}` is not a UUID"));
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| format!("`{text}` is not a UUID"))?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| format!("`{text}` is not a UUID"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn numeric_bytes(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_numeric_text(text, &mut out).unwrap();
        out
    }

    fn text_of(bytes: &[u8]) -> String {
        let mut s = String::new();
        Numeric::parse(bytes).unwrap().to_text(&mut s);
        s
    }

    #[test]
    fn numerics_keep_their_display_scale_and_specials() {
        for t in [
            "0",
            "1",
            "-1",
            "12.340",
            "0.0001",
            "10000",
            "123456789.987654321",
            "NaN",
            "Infinity",
            "-Infinity",
            "-0.05",
        ] {
            assert_eq!(text_of(&numeric_bytes(t)), t);
        }
        assert_eq!(text_of(&numeric_bytes("1e3")), "1000");
        assert_eq!(text_of(&numeric_bytes("1.5e-3")), "0.0015");
    }

    #[test]
    fn uuids_round_trip() {
        let text = "123e4567-e89b-12d3-a456-426614174000";
        let mut back = String::new();
        uuid_text(&uuid_bytes(text).unwrap(), &mut back);
        assert_eq!(back, text);
        assert!(uuid_bytes("nope").is_err());
    }

    proptest! {
        #[test]
        fn decimal_mantissas_round_trip(mantissa in any::<i64>(), scale in 0i8..12) {
            let mut out = Vec::new();
            put_numeric_i128(i128::from(mantissa), scale, &mut out);
            prop_assert_eq!(Numeric::parse(&out).unwrap().to_i128(scale), Ok(i128::from(mantissa)));
        }

        #[test]
        fn decimals_read_at_another_scale_only_when_exact(mantissa in any::<i64>(), scale in 0i8..12, other in 0i8..18) {
            let mut out = Vec::new();
            put_numeric_i128(i128::from(mantissa), scale, &mut out);
            let m = i128::from(mantissa);
            let expected = if other >= scale {
                Ok(m * 10i128.pow((other - scale) as u32))
            } else {
                let d = 10i128.pow((scale - other) as u32);
                if m % d == 0 { Ok(m / d) } else { Err(()) }
            };
            prop_assert_eq!(Numeric::parse(&out).unwrap().to_i128(other).map_err(|_| ()), expected);
        }

        #[test]
        fn wide_mantissas_round_trip(mantissa in -(10i128.pow(38) - 1)..10i128.pow(38), scale in 0i8..38) {
            let mut out = Vec::new();
            put_numeric_i128(mantissa, scale, &mut out);
            prop_assert_eq!(Numeric::parse(&out).unwrap().to_i128(scale), Ok(mantissa));
        }
    }
}
