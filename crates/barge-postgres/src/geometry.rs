//! PostGIS `geometry` values: EWKB on the wire (binary COPY's `geometry_send`/`geometry_recv`),
//! barge's canonical geometry in Arrow ([`barge_core::LOGICAL_GEOMETRY`]: a 4-byte little-endian
//! SRID, then WKB, as MySQL stores it). EWKB is WKB whose type word carries flags, one of which
//! says an SRID follows it; Z and M flags pass through unchanged.

/// The EWKB type flag: an SRID follows the type word.
const SRID_FLAG: u32 = 0x2000_0000;

/// A WKB header's byte order (0 big-endian, 1 little-endian) and type word.
fn header(wkb: &[u8]) -> Result<(bool, u32), String> {
    let (&order, rest) = wkb.split_first().ok_or("an empty geometry")?;
    let word: [u8; 4] = rest.get(..4).and_then(|w| w.try_into().ok()).ok_or("a geometry shorter than its header")?;
    match order {
        0 => Ok((false, u32::from_be_bytes(word))),
        1 => Ok((true, u32::from_le_bytes(word))),
        other => Err(format!("a geometry with byte order {other}")),
    }
}

fn word(value: u32, little: bool) -> [u8; 4] {
    if little { value.to_le_bytes() } else { value.to_be_bytes() }
}

/// PostGIS EWKB → the canonical layout (SRID 0 when EWKB carries none).
pub fn from_ewkb(ewkb: &[u8]) -> Result<Vec<u8>, String> {
    let (little, kind) = header(ewkb)?;
    let (srid, body) = if kind & SRID_FLAG != 0 {
        let srid: [u8; 4] = ewkb.get(5..9).and_then(|s| s.try_into().ok()).ok_or("a geometry cut in its SRID")?;
        (if little { u32::from_le_bytes(srid) } else { u32::from_be_bytes(srid) }, &ewkb[9..])
    } else {
        (0, &ewkb[5..])
    };
    let mut out = Vec::with_capacity(ewkb.len());
    out.extend_from_slice(&srid.to_le_bytes());
    out.push(ewkb[0]);
    out.extend_from_slice(&word(kind & !SRID_FLAG, little));
    out.extend_from_slice(body);
    Ok(out)
}

/// The canonical layout → PostGIS EWKB (an SRID flag and word only for an SRID other than 0).
pub fn to_ewkb(canonical: &[u8]) -> Result<Vec<u8>, String> {
    let srid: [u8; 4] = canonical.get(..4).and_then(|s| s.try_into().ok()).ok_or("a geometry without its SRID")?;
    let srid = u32::from_le_bytes(srid);
    let wkb = &canonical[4..];
    let (little, kind) = header(wkb)?;
    if kind & SRID_FLAG != 0 {
        return Err("a geometry whose WKB already carries an SRID".into());
    }
    let mut out = Vec::with_capacity(canonical.len() + 4);
    out.push(wkb[0]);
    if srid == 0 {
        out.extend_from_slice(&wkb[1..]);
    } else {
        out.extend_from_slice(&word(kind | SRID_FLAG, little));
        out.extend_from_slice(&word(srid, little));
        out.extend_from_slice(&wkb[5..]);
    }
    Ok(out)
}

/// The subtype of a PostGIS column type as `format_type` prints it: `geometry(Point,4326)` →
/// `Point`; `None` for a bare `geometry` or a subtype with Z or M (no other engine has them).
pub fn subtype(declared: &str) -> Option<&'static str> {
    let (_, modifier) = declared.split_once('(')?;
    barge_core::types::geometry_type(modifier.split([',', ')']).next()?)
}

/// The PostGIS column type for a field of [`barge_core::LOGICAL_GEOMETRY`]: `geometry(Point)` for
/// a declared subtype (any SRID), else `geometry`.
pub fn column_type(field: &arrow_schema::Field) -> String {
    match field.metadata().get(barge_core::META_GEOMETRY_TYPE).and_then(|t| barge_core::types::geometry_type(t)) {
        Some(subtype) if subtype != "Geometry" => format!("geometry({subtype})"),
        _ => "geometry".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn a_postgis_point_with_its_srid_is_the_bytes_mysql_stores() {
        // PostGIS: ST_SetSRID(ST_MakePoint(1, 2), 4326); MariaDB: ST_GeomFromText('POINT(1 2)', 4326).
        let ewkb = hex("0101000020E6100000000000000000F03F0000000000000040");
        let mysql = hex("E61000000101000000000000000000F03F0000000000000040");
        assert_eq!(from_ewkb(&ewkb).unwrap(), mysql);
        assert_eq!(to_ewkb(&mysql).unwrap(), ewkb);
        // No SRID: EWKB is plain WKB.
        let line = hex("01020000000200000000000000000000000000000000000000000000000000F03F000000000000F03F");
        assert_eq!(&from_ewkb(&line).unwrap()[..4], &[0, 0, 0, 0]);
        assert_eq!(to_ewkb(&from_ewkb(&line).unwrap()).unwrap(), line);
    }

    #[test]
    fn cut_or_unknown_geometries_are_errors() {
        assert!(from_ewkb(&[]).is_err());
        assert!(from_ewkb(&[1, 1, 0, 0]).is_err());
        assert!(from_ewkb(&[7, 1, 0, 0, 0]).is_err());
        assert!(from_ewkb(&[1, 1, 0, 0, 0x20, 1]).is_err(), "an SRID flag without the SRID");
        assert!(to_ewkb(&[0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn canonical_geometries_round_trip_through_ewkb(
            srid in prop_oneof![Just(0u32), any::<u32>()],
            little in any::<bool>(),
            kind in 1u32..8,
            flags in prop_oneof![Just(0u32), Just(0x8000_0000u32), Just(0x4000_0000u32)],
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut canonical = srid.to_le_bytes().to_vec();
            canonical.push(u8::from(little));
            canonical.extend_from_slice(&word(kind | flags, little));
            canonical.extend_from_slice(&body);
            let ewkb = to_ewkb(&canonical).unwrap();
            prop_assert_eq!(from_ewkb(&ewkb).unwrap(), canonical);
        }
    }
}
