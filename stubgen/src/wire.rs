//! Just enough of the protobuf wire format to cut encoded descriptors apart
//! without decoding them (decoding through prost-types would drop options).

/// One field of an encoded message: number, wire type and its bytes
/// (`value` is the payload of a length-delimited field).
pub(crate) struct Field<'a> {
    pub number: u32,
    pub wire_type: u8,
    /// The whole field, tag included.
    pub raw: &'a [u8],
    /// Length-delimited payload (empty for other wire types).
    pub value: &'a [u8],
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The top-level fields of an encoded message, in order; `None` if malformed.
pub(crate) fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = varint(buf, &mut pos)?;
        let wire_type = (tag & 7) as u8;
        let number = (tag >> 3) as u32;
        let mut value: &[u8] = &[];
        match wire_type {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos += 8,
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos.checked_add(len)?;
                value = buf.get(pos..end)?;
                pos = end;
            }
            5 => pos += 4,
            _ => return None,
        }
        if pos > buf.len() {
            return None;
        }
        out.push(Field { number, wire_type, raw: &buf[start..pos], value });
    }
    Some(out)
}

/// The encoded message without the top-level fields numbered in `drop`.
pub(crate) fn without_fields(buf: &[u8], drop: &[u32]) -> Vec<u8> {
    match fields(buf) {
        Some(fs) => fs.iter().filter(|f| !drop.contains(&f.number)).flat_map(|f| f.raw.iter().copied()).collect(),
        None => buf.to_vec(),
    }
}

/// The payloads of the length-delimited fields numbered `number`.
pub(crate) fn messages(buf: &[u8], number: u32) -> Vec<&[u8]> {
    fields(buf)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.number == number && f.wire_type == 2)
        .map(|f| f.value)
        .collect()
}
