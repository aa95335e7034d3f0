//! The async driver `read_frames` over an in-memory reader returning small chunks.

mod common;

use common::{block_on, ChunkReader, Empty};
use embedded_io_async::ErrorKind;
use leaf_frames::{
    encode_cobs, read_frames, CobsDecoder, FixedDecoder, FrameError, GapDecoder, LineDecoder,
};

type Results = Vec<Result<Vec<u8>, FrameError>>;

fn run<D: leaf_frames::Decoder>(
    reader: &mut ChunkReader,
    decoder: &mut D,
    chunk_len: usize,
) -> (Result<(), ErrorKind>, Results) {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; chunk_len];
    let result = block_on(read_frames(reader, decoder, &mut chunk, |r| {
        out.push(r.map(<[u8]>::to_vec))
    }));
    (result, out)
}

#[test]
fn lines_in_small_chunks_with_truncated_tail() {
    let mut reader = ChunkReader::new(b"one\r\ntwo\r\n\r\nthr".to_vec(), vec![1, 3, 2]);
    let mut d = LineDecoder::<8>::new(b"\r\n").unwrap();
    let (result, out) = run(&mut reader, &mut d, 4);
    assert_eq!(result, Ok(()));
    assert_eq!(
        out,
        [
            Ok(b"one".to_vec()),
            Ok(b"two".to_vec()),
            Err(FrameError::Truncated { len: 3 })
        ]
    );
}

#[test]
fn gap_frame_emitted_at_eof() {
    let mut reader = ChunkReader::new(b"\x01\x02\x03\x04\x05".to_vec(), vec![2]);
    let (result, out) = run(&mut reader, &mut GapDecoder::<8>::new(), 3);
    assert_eq!(result, Ok(()));
    assert_eq!(out, [Ok(vec![1, 2, 3, 4, 5])]);
}

#[test]
fn cobs_and_fixed_frames() {
    let mut wire = vec![0u8; 64];
    let n = encode_cobs(&[0, 1, 0, 2], &mut wire).unwrap();
    wire.truncate(n);
    let mut reader = ChunkReader::new(wire.repeat(3), vec![5, 1]);
    let (result, out) = run(&mut reader, &mut CobsDecoder::<8>::new(), 16);
    assert_eq!(result, Ok(()));
    assert_eq!(out, vec![Ok(vec![0, 1, 0, 2]); 3]);

    let mut reader = ChunkReader::new((0..7).collect(), vec![3]);
    let (result, out) = run(&mut reader, &mut FixedDecoder::<4>::new(3).unwrap(), 2);
    assert_eq!(result, Ok(()));
    assert_eq!(
        out,
        [
            Ok(vec![0, 1, 2]),
            Ok(vec![3, 4, 5]),
            Err(FrameError::Truncated { len: 1 })
        ]
    );
}

#[test]
fn read_error_is_returned_without_idle() {
    let mut reader = ChunkReader::new(b"a\nb".to_vec(), vec![1]);
    reader.fail = Some(ErrorKind::BrokenPipe);
    let mut d = LineDecoder::<8>::new(b"\n").unwrap();
    let (result, out) = run(&mut reader, &mut d, 8);
    assert_eq!(result, Err(ErrorKind::BrokenPipe));
    assert_eq!(out, [Ok(b"a".to_vec())]);
    // The partial "b" is still pending in the decoder.
    use leaf_frames::Decoder;
    assert_eq!(d.idle(), Some(Err(FrameError::Truncated { len: 1 })));
}

#[test]
fn empty_stream() {
    let mut calls = 0;
    let mut d = GapDecoder::<4>::new();
    let result = block_on(read_frames(&mut Empty, &mut d, &mut [0u8; 4], |_| {
        calls += 1
    }));
    assert!(result.is_ok());
    assert_eq!(calls, 0);
}
