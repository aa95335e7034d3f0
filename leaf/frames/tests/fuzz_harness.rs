//! Runs the fuzz target's body (`leaf_frames::fuzzing::decoders`) over a few thousand
//! pseudo-random inputs, biased towards delimiters and valid records, so the fuzz harness is
//! exercised by `cargo test` too.

use leaf_frames::{encode_record, fuzzing, Record};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn fuzz_body_over_random_inputs() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet = [0u8, b'\n', b'\r', b'a', b'b', 0xFE, 0xFF, 1];
    for _ in 0..4000 {
        let len = rng.below(200);
        let mut data: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(2) == 0 {
                    alphabet[rng.below(alphabet.len())]
                } else {
                    rng.next() as u8
                }
            })
            .collect();
        // Splice in a valid (possibly corrupted) record now and then.
        if rng.below(3) == 0 {
            let payload: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            let record = Record {
                channel: "dev.temp",
                timestamp_us: rng.next(),
                payload: &payload,
            };
            let mut out = [0u8; 128];
            let n = encode_record(&record, &mut out).unwrap();
            let mut wire = out[..n].to_vec();
            if rng.below(2) == 0 {
                let i = rng.below(n);
                wire[i] ^= 1 << rng.below(8);
            }
            let at = rng.below(data.len() + 1);
            data.splice(at..at, wire);
        }
        fuzzing::decoders(&data);
        // A bare record body (version + postcard), which the harness CRCs and decodes.
        let payload_len = rng.below(20);
        let mut body = vec![
            rng.below(4) as u8,
            3,
            b'a',
            b'.',
            b'b',
            rng.next() as u8 & 0x7F,
        ];
        body.push(payload_len as u8);
        body.extend((0..payload_len).map(|_| rng.next() as u8));
        body.insert(0, rng.next() as u8);
        fuzzing::decoders(&body);
    }
}
