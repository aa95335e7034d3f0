//! The on-disk format, version [`FORMAT_VERSION`]: redb table definitions and the
//! postcard-encoded records stored in them. See `DESIGN.md` next to this file.
//!
//! Changing any record's shape or any key's meaning requires a new format version.

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The format version written to (and required from) the `meta` table.
///
/// * 1: the first.
/// * 2: `StateRec::bytes` counts each message as nats-server's file store does
///   ([`msg_size`]); version 1 counted subject, headers and payload only. A version 1 file
///   is migrated when it is opened (one pass over its messages, one commit).
/// * 3: a block value may be compressed ([`COMPRESSED_MAGIC`]); a version 2 file is one as
///   it is (its migration writes the new version only), but older binaries cannot read a
///   version 3 file's compressed blocks, so they refuse it.
/// * 4: blocks may live in sealed segment files (`seg-<n>.redb`) named by the `sealed` and
///   `segments` tables; a version 3 file is a version 4 file without segments (its
///   migration creates the two tables and writes the version), but older binaries would not
///   see the sealed blocks, so they refuse it.
pub const FORMAT_VERSION: u32 = 4;

/// `meta`: `"format_version"` → u32 LE, `"next_stream_id"` → u32 LE.
pub(crate) const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
/// `streams`: stream name → [`StreamDef`].
pub(crate) const STREAMS: redb::TableDefinition<&str, &[u8]> =
    redb::TableDefinition::new("streams");
/// `stream_state`: stream id → [`StateRec`]. Rewritten once per commit that touches the stream.
pub(crate) const STATES: redb::TableDefinition<u32, &[u8]> =
    redb::TableDefinition::new("stream_state");
/// `blocks`: (stream id, seq of the block's first slot) → [`BlockRec`].
pub(crate) const BLOCKS: redb::TableDefinition<(u32, u64), &[u8]> =
    redb::TableDefinition::new("blocks");
/// `sealed`: (stream id, seq of the block's first slot) → the number of the segment file
/// holding that block (the block is then not in `blocks`; a block lives in exactly one place).
pub(crate) const SEALED: redb::TableDefinition<(u32, u64), u64> =
    redb::TableDefinition::new("sealed");
/// `segments`: segment number → (how many `sealed` entries name it, how many blocks it was
/// adopted with). A segment no entry names is removed from this table in the same commit,
/// and its file after the commit; one named by a quarter of its blocks or fewer is unsealed
/// (its live blocks written back into the active file, to be sealed again with others).
pub(crate) const SEGMENTS: redb::TableDefinition<u64, (u64, u64)> =
    redb::TableDefinition::new("segments");
/// `subjects`: (stream id, literal subject) → [`SubjectRec`].
pub(crate) const SUBJECTS: redb::TableDefinition<(u32, &str), &[u8]> =
    redb::TableDefinition::new("subjects");
/// `consumers`: (stream id, consumer name) → opaque bytes owned by the layer above.
pub(crate) const CONSUMERS: redb::TableDefinition<(u32, &str), &[u8]> =
    redb::TableDefinition::new("consumers");

/// `quarantine`: (`stream <name>` or `consumer <stream> <name>`, ns since the epoch) → the
/// reason and the record's original bytes (`quarantine.rs`). Added without a format change: older
/// builds never open it, and a file without it has nothing quarantined.
pub(crate) const QUARANTINE: redb::TableDefinition<(&str, i64), &[u8]> =
    redb::TableDefinition::new("quarantine");

/// Key of the format version in `meta`.
pub(crate) const META_VERSION: &str = "format_version";
/// Key in `meta` of the bytes of blocks written into the active file since the last seal,
/// u64 LE: written by a clean close, removed by the first commit after the next open (so a
/// crash leaves none, and the open after it estimates from the file's length instead).
pub(crate) const META_UNSEALED: &str = "unsealed_bytes";
/// Key of the next unused stream id in `meta` (ids are never reused).
pub(crate) const META_NEXT_ID: &str = "next_stream_id";

/// A block is closed (a new block is started within the same commit) once its encoded
/// payload reaches this many bytes, so one record stays small enough to rewrite cheaply.
pub(crate) const BLOCK_TARGET_BYTES: usize = 256 * 1024;

/// A stream's definition: its id (the key prefix of all its other records) and its config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StreamDef {
    /// Internal id, unique for the life of the file.
    pub id: u32,
    /// Opaque config bytes of the layer above.
    #[serde(with = "serde_bytes")]
    pub config: Vec<u8>,
}

/// A stream's counters, as stored.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StateRec {
    pub first_seq: u64,
    pub last_seq: u64,
    pub msgs: u64,
    pub bytes: u64,
    pub first_ts_ns: i64,
    pub last_ts_ns: i64,
    pub num_subjects: u64,
}

/// One subject's entry in the subject index.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SubjectRec {
    pub first_seq: u64,
    pub last_seq: u64,
    pub msgs: u64,
}

/// A run of consecutive sequence numbers of one stream, written by one commit. Slot `i`
/// holds sequence `first_seq + i`; `None` is a deleted message (tombstone). A block whose
/// slots are all `None` is removed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct BlockRec {
    pub slots: Vec<Option<MsgRec>>,
}

/// One stored message (its sequence number is implied by its slot).
///
/// Byte fields are encoded as postcard byte strings (`serde_bytes`): a varint length and the
/// raw bytes, which is exactly what postcard writes for a sequence of `u8`, so files written
/// before `serde_bytes` was used read the same (test `byte_strings_encode_as_u8_sequences`);
/// it only makes encoding and decoding one copy instead of a loop over bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MsgRec {
    pub subject: String,
    #[serde(with = "serde_bytes")]
    pub headers: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub ts_ns: i64,
}

/// Borrowed twin of [`MsgRec`] with the identical encoding: written on the append path
/// without copying payloads, and read without allocating (purges, counting, range reads that
/// slice one shared buffer).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MsgRef<'a> {
    pub subject: &'a str,
    #[serde(borrow, with = "serde_bytes")]
    pub headers: Option<&'a [u8]>,
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
    pub ts_ns: i64,
}

impl MsgRef<'_> {
    /// The bytes this message is accounted for (see [`MsgRec::size`]).
    pub(crate) fn size(&self) -> u64 {
        msg_size(
            self.subject,
            self.headers.map_or(0, <[u8]>::len),
            self.payload.len(),
        )
    }

    /// An owned copy.
    #[cfg(test)]
    pub(crate) fn to_owned_rec(&self) -> MsgRec {
        MsgRec {
            subject: self.subject.to_string(),
            headers: self.headers.map(<[u8]>::to_vec),
            payload: self.payload.to_vec(),
            ts_ns: self.ts_ns,
        }
    }
}

/// Borrowed twin of [`BlockRec`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BlockRef<'a> {
    #[serde(borrow)]
    pub slots: Vec<Option<MsgRef<'a>>>,
}

impl MsgRec {
    /// The bytes this message is accounted for in [`StreamState::bytes`](super::StreamState).
    pub(crate) fn size(&self) -> u64 {
        msg_size(
            &self.subject,
            self.headers.as_ref().map_or(0, Vec::len),
            self.payload.len(),
        )
    }
}

/// Accounted size of a message, as nats-server's file store accounts it in a stream's
/// `bytes` (and so in `max_bytes`): its record's length, sequence, time, subject length and
/// checksum (30 bytes) plus subject and payload, and with headers their length field (4
/// bytes) and the headers.
pub fn msg_size(subject: &str, headers_len: usize, payload_len: usize) -> u64 {
    let fixed = if headers_len == 0 { 30 } else { 34 };
    (fixed + subject.len() + headers_len + payload_len) as u64
}

/// [`msg_size`] as format version 1 counted it (the migration's tests write such files).
#[cfg(test)]
pub(crate) fn msg_size_v1(subject: &str, headers_len: usize, payload_len: usize) -> u64 {
    (subject.len() + headers_len + payload_len) as u64
}

/// The first bytes of a compressed block value (streams with `compression: s2`): Snappy's
/// stream identifier, then the raw Snappy compression of the block's postcard encoding. No
/// postcard `BlockRec` starts with these bytes (`ff 06` is a slot count of 895, `00 00` two
/// empty slots, and `73` is no `Option` tag), so plain and compressed blocks need no flag and a
/// stream's blocks may be of both kinds (its compression can change).
pub(crate) const COMPRESSED_MAGIC: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// The largest block a compressed value may expand to: a stored file is not trusted to say.
const MAX_BLOCK_BYTES: usize = 256 << 20;

/// A block value as postcard bytes: the value itself when stored plain (no copy), else its
/// decompression into `buf`.
pub(crate) fn block_bytes<'a>(
    value: &'a [u8],
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], StoreError> {
    let Some(z) = value.strip_prefix(COMPRESSED_MAGIC) else {
        return Ok(value);
    };
    let corrupt = |e: snap::Error| StoreError::Corrupt(format!("compressed block: {e}"));
    let n = snap::raw::decompress_len(z).map_err(corrupt)?;
    if n > MAX_BLOCK_BYTES {
        return Err(StoreError::Corrupt(format!(
            "compressed block claims {n} bytes"
        )));
    }
    buf.clear();
    buf.resize(n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(z, buf)
        .map_err(corrupt)?;
    buf.truncate(written);
    Ok(buf.as_slice())
}

/// `encoded` (a block's postcard bytes) as a compressed block value, into `out`.
pub(crate) fn compress_block(encoded: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
    out.clear();
    out.extend_from_slice(COMPRESSED_MAGIC);
    let start = out.len();
    out.resize(start + snap::raw::max_compress_len(encoded.len()), 0);
    let n = snap::raw::Encoder::new()
        .compress(encoded, &mut out[start..])
        .map_err(|e| StoreError::Invalid(format!("compress block: {e}")))?;
    out.truncate(start + n);
    Ok(())
}

/// Encodes a record.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(v).map_err(|e| StoreError::Invalid(format!("encode: {e}")))
}

/// Encodes a record into `buf` (cleared first), reusing its allocation.
pub(crate) fn encode_into<T: Serialize>(v: &T, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    let mut out = std::mem::take(buf);
    out.clear();
    *buf = postcard::to_extend(v, out).map_err(|e| StoreError::Invalid(format!("encode: {e}")))?;
    Ok(())
}

/// Decodes a record.
pub(crate) fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(b)?)
}

/// Encodes a u32 as 4 LE bytes (for `meta`).
pub(crate) fn u32_bytes(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// Decodes a `meta` u32.
pub(crate) fn u32_from(b: &[u8]) -> Result<u32, StoreError> {
    let arr: [u8; 4] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt("meta value is not 4 bytes".into()))?;
    Ok(u32::from_le_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_encodings_agree() {
        let owned = BlockRec {
            slots: vec![
                Some(MsgRec {
                    subject: "a.b".into(),
                    headers: Some(b"NATS/1.0\r\n\r\n".to_vec()),
                    payload: vec![1, 2, 3],
                    ts_ns: -5,
                }),
                None,
            ],
        };
        let borrowed = BlockRef {
            slots: vec![
                Some(MsgRef {
                    subject: "a.b",
                    headers: Some(b"NATS/1.0\r\n\r\n"),
                    payload: &[1, 2, 3],
                    ts_ns: -5,
                }),
                None,
            ],
        };
        let a = encode(&owned).unwrap();
        let b = encode(&borrowed).unwrap();
        assert_eq!(a, b);
        assert_eq!(decode::<BlockRec>(&a).unwrap(), owned);
    }

    /// The encoding of format version 1 as first written: byte fields as plain `Vec<u8>`
    /// (postcard: a sequence of `u8`).
    #[derive(Serialize)]
    struct MsgRecV1Seq {
        subject: String,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
        ts_ns: i64,
    }

    #[test]
    fn byte_strings_encode_as_u8_sequences() {
        let payload: Vec<u8> = (0..=255u8).chain(0..200).collect();
        let old = vec![
            Some(MsgRecV1Seq {
                subject: "a.b".into(),
                headers: Some(b"NATS/1.0\r\nX: y\r\n\r\n".to_vec()),
                payload: payload.clone(),
                ts_ns: 1_700_000_000_000_000_000,
            }),
            None,
            Some(MsgRecV1Seq {
                subject: "c".into(),
                headers: None,
                payload: Vec::new(),
                ts_ns: -1,
            }),
        ];
        let old_bytes = encode(&(old,)).unwrap();
        let new = BlockRec {
            slots: vec![
                Some(MsgRec {
                    subject: "a.b".into(),
                    headers: Some(b"NATS/1.0\r\nX: y\r\n\r\n".to_vec()),
                    payload,
                    ts_ns: 1_700_000_000_000_000_000,
                }),
                None,
                Some(MsgRec {
                    subject: "c".into(),
                    headers: None,
                    payload: Vec::new(),
                    ts_ns: -1,
                }),
            ],
        };
        assert_eq!(encode(&new).unwrap(), old_bytes);
        assert_eq!(decode::<BlockRec>(&old_bytes).unwrap(), new);
        let view: BlockRef<'_> = decode(&old_bytes).unwrap();
        let owned: Vec<Option<MsgRec>> = view
            .slots
            .iter()
            .map(|s| s.as_ref().map(MsgRef::to_owned_rec))
            .collect();
        assert_eq!(owned, new.slots);
        let mut buf = vec![9; 3];
        encode_into(&new, &mut buf).unwrap();
        assert_eq!(buf, old_bytes);
    }

    #[test]
    fn garbage_is_corrupt_not_panic() {
        assert!(matches!(
            decode::<BlockRec>(&[0xff, 0xff, 0xff]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
