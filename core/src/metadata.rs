//! Call metadata as host languages see it: `(key, value)` pairs, where keys
//! ending in `-bin` carry bytes (base64 on the wire) and all others ASCII text.
//! Every binding converts through here, so all languages agree.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::status::{base64_decode, base64_encode};

/// A metadata value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaValue {
    Text(String),
    Binary(Vec<u8>),
}

/// Headers the transport owns: never shown to, nor accepted from, applications.
const RESERVED: [&str; 8] =
    ["content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "grpc-status", "grpc-message", "grpc-status-details-bin"];

/// The application-visible pairs of a header map, in order.
pub fn to_pairs(h: &HeaderMap) -> Vec<(String, MetaValue)> {
    let mut out = Vec::with_capacity(h.len());
    for (k, v) in h {
        let key = k.as_str();
        if RESERVED.contains(&key) {
            continue;
        }
        let value = if key.ends_with("-bin") {
            match base64_decode(v.as_bytes()) {
                Some(b) => MetaValue::Binary(b),
                None => continue,
            }
        } else {
            MetaValue::Text(String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        out.push((key.to_string(), value));
    }
    out
}

/// Appends one pair, validating it as gRPC requires.
pub fn append_pair(h: &mut HeaderMap, key: &str, value: MetaValue) -> Result<(), String> {
    let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| format!("invalid metadata key {key:?}"))?;
    if name.as_str() != key {
        return Err(format!("metadata key {key:?} must be lowercase"));
    }
    if RESERVED.contains(&key) || key.starts_with(':') {
        return Err(format!("metadata key {key:?} is reserved"));
    }
    let v = match (key.ends_with("-bin"), value) {
        (true, MetaValue::Binary(b)) => HeaderValue::try_from(base64_encode(&b)),
        (true, MetaValue::Text(t)) => HeaderValue::try_from(base64_encode(t.as_bytes())),
        (false, MetaValue::Text(t)) => HeaderValue::try_from(t),
        (false, MetaValue::Binary(_)) => return Err(format!("metadata key {key:?} needs a text value (binary values need a key ending in -bin)")),
    }
    .map_err(|_| format!("invalid value for metadata key {key:?}: printable ASCII only"))?;
    h.append(name, v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_reserved_are_hidden() {
        let mut h = HeaderMap::new();
        append_pair(&mut h, "x-a", MetaValue::Text("1".into())).unwrap();
        append_pair(&mut h, "x-a", MetaValue::Text("2".into())).unwrap();
        append_pair(&mut h, "x-b-bin", MetaValue::Binary(vec![0, 255, 7])).unwrap();
        h.insert("grpc-timeout", "1S".parse().unwrap());
        h.insert("content-type", "application/grpc".parse().unwrap());
        let p = to_pairs(&h);
        assert_eq!(
            p,
            vec![
                ("x-a".to_string(), MetaValue::Text("1".into())),
                ("x-a".to_string(), MetaValue::Text("2".into())),
                ("x-b-bin".to_string(), MetaValue::Binary(vec![0, 255, 7])),
            ]
        );
    }

    #[test]
    fn bad_pairs_are_refused_with_reason() {
        let mut h = HeaderMap::new();
        assert!(append_pair(&mut h, "X-Up", MetaValue::Text("v".into())).unwrap_err().contains("lowercase"));
        assert!(append_pair(&mut h, "grpc-timeout", MetaValue::Text("1S".into())).unwrap_err().contains("reserved"));
        assert!(append_pair(&mut h, "x-a", MetaValue::Text("line\nbreak".into())).unwrap_err().contains("ASCII"));
        assert!(append_pair(&mut h, "x-a", MetaValue::Binary(vec![1])).unwrap_err().contains("-bin"));
        assert!(append_pair(&mut h, "bad key", MetaValue::Text("v".into())).unwrap_err().contains("invalid"));
    }
}
