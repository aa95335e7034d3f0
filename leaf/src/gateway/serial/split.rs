//! Splitting a text frame into one message per field (`format = "kv"` or `"json"`).

/// Why a frame could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The frame holds no `key=value` pair.
    #[error("no key=value pair in the frame")]
    NoPairs,
    /// The frame is not a JSON object.
    #[error("not a JSON object: {0}")]
    Json(String),
}

/// `key=value` pairs separated by spaces, tabs, commas or semicolons; pieces without `=`
/// are skipped. Values are the bytes after the first `=`.
///
/// # Errors
/// [`SplitError::NoPairs`] when nothing in the frame is a pair.
pub fn key_values(frame: &[u8]) -> Result<Vec<(String, Vec<u8>)>, SplitError> {
    let pairs: Vec<(String, Vec<u8>)> = frame
        .split(|b| matches!(b, b' ' | b'\t' | b',' | b';' | b'\r' | b'\n'))
        .filter_map(|piece| {
            let eq = piece.iter().position(|&b| b == b'=')?;
            let (key, value) = (&piece[..eq], &piece[eq + 1..]);
            (!key.is_empty()).then(|| (String::from_utf8_lossy(key).into_owned(), value.to_vec()))
        })
        .collect();
    if pairs.is_empty() {
        return Err(SplitError::NoPairs);
    }
    Ok(pairs)
}

/// The top-level fields of a JSON object, each value re-serialized as JSON (strings keep
/// their quotes, so `"on"` and `1` stay distinguishable).
///
/// # Errors
/// [`SplitError::Json`] when the frame is not a JSON object.
pub fn json_fields(frame: &[u8]) -> Result<Vec<(String, Vec<u8>)>, SplitError> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(frame).map_err(|e| SplitError::Json(e.to_string()))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.to_string().into_bytes()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_on_common_separators() {
        let got = key_values(b"t=21.5, h=40;p=1013 junk x= =y").unwrap();
        let want: Vec<(String, Vec<u8>)> = vec![
            ("t".into(), b"21.5".to_vec()),
            ("h".into(), b"40".to_vec()),
            ("p".into(), b"1013".to_vec()),
            ("x".into(), b"".to_vec()),
        ];
        assert_eq!(got, want);
        assert_eq!(key_values(b"hello world"), Err(SplitError::NoPairs));
    }

    #[test]
    fn json_fields_keep_json_values() {
        let got = json_fields(br#"{"t":21.5,"s":"on","a":[1,2]}"#).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.contains(&("t".into(), b"21.5".to_vec())));
        assert!(got.contains(&("s".into(), br#""on""#.to_vec())));
        assert!(got.contains(&("a".into(), b"[1,2]".to_vec())));
        assert!(matches!(json_fields(b"[1]"), Err(SplitError::Json(_))));
        assert!(matches!(json_fields(b"{bad"), Err(SplitError::Json(_))));
    }
}
