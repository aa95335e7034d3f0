//! Fuzzing on stable Rust: the checks the fuzz targets run, a small mutation engine and a
//! bounded driver, so CI can fuzz with `cargo test` (cargo-fuzz needs nightly, which a CI
//! machine need not have). The libFuzzer targets in `fuzz/` call the same checks.
//!
//! [`run`] mutates a seed corpus of valid inputs (bit flips, random and interesting bytes,
//! deletions, duplications, splices of two seeds) with a seeded xorshift generator, so a run
//! is reproducible from its seed; it stops after `LEAF_FUZZ_CASES` cases (default: the
//! caller's) or `LEAF_FUZZ_SECS` seconds, whichever comes first. A failing input is printed
//! in hex with the seed and case number before the panic goes on.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::{
    parse_client_op, parse_leaf_op, parse_route_op, write_leaf_op, write_route_op, Limits,
};

/// The limits a fuzz input's first byte picks: even, the defaults; odd, tiny ones that make
/// the limit checks fire often.
fn limits(selector: u8) -> Limits {
    if selector & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_control_line: usize::from(selector >> 1),
            max_payload: usize::from(selector),
        }
    }
}

/// The client parser's properties, for any input (the first byte picks the limits): no
/// panic, and every consumed length is non-zero and within the input.
pub fn check_client_ops(data: &[u8]) {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let limits = limits(selector);
    while let Ok(Some((op, consumed))) = parse_client_op(rest, &limits) {
        assert!(consumed > 0 && consumed <= rest.len());
        let _ = op.name();
        rest = &rest[consumed..];
    }
}

/// The properties of a server-to-server parser (`$parse`, with its writer `$write`), for any
/// input: the first byte picks the limits (the defaults, or tiny ones that make the limit
/// checks fire); the rest is parsed op after op. The parser must not panic, every consumed
/// length is non-zero and within the input, and every decoded op re-encodes to bytes that
/// decode back to an equal op.
macro_rules! check_link_ops {
    ($data:expr, $parse:path, $write:path) => {{
        let Some((&selector, mut rest)) = $data.split_first() else {
            return;
        };
        let limits = limits(selector);
        let unlimited = Limits {
            max_control_line: usize::MAX,
            max_payload: usize::MAX,
        };
        let mut out = BytesMut::new();
        while let Ok(Some((op, consumed))) = $parse(rest, &limits) {
            assert!(consumed > 0 && consumed <= rest.len());
            let _ = op.name();
            out.clear();
            $write(&mut out, &op);
            match $parse(&out, &unlimited) {
                Ok(Some((again, n))) => {
                    assert_eq!(again, op);
                    assert_eq!(n, out.len());
                }
                other => panic!("{op:?} re-encoded to {out:?}: {other:?}"),
            }
            rest = &rest[consumed..];
        }
    }};
}

/// The leafnode parser's properties (see `check_link_ops`): no panic, consumed lengths within
/// the input, every op re-encoded and decoded back equal.
pub fn check_leaf_ops(data: &[u8]) {
    check_link_ops!(data, parse_leaf_op, write_leaf_op)
}

/// The route parser's properties, the same as the leafnode parser's.
pub fn check_route_ops(data: &[u8]) {
    check_link_ops!(data, parse_route_op, write_route_op)
}

/// A seeded xorshift64* generator (not for secrets: for reproducible fuzz inputs).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Bytes that make parsers take their unusual paths.
const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"0",
    b"-1",
    b"4294967296",
    b"18446744073709551616",
    b"99999999999",
    b"{",
    b"}",
    b"\"",
    b"\\",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"-0",
    b"1e400",
    b"*",
    b">",
    b".",
    b"..",
    b"NATS/1.0\r\n",
    b"\xff",
    b"\x00",
    b"\xc3",
    b"\xe2\x80\xae",
];

/// One mutated input from `seeds` (a few mutations of one seed, sometimes spliced with
/// another).
pub fn mutate(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].to_vec();
    for _ in 0..=rng.below(8) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next_u64() as u8;
            }
            2 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(16)).min(len);
                data.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(32)).min(len);
                let copy = data[from..to].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            5 => {
                let other = seeds[rng.below(seeds.len())];
                let cut = rng.below(data.len() + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let digits = rng.next_u64().to_string();
                let to = (at + digits.len()).min(len);
                data.splice(at..to, digits.bytes());
            }
            _ => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(4);
                let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                data.splice(at..at, junk);
            }
        }
    }
    data
}

/// The budget of a run: cases and time, from `LEAF_FUZZ_CASES` and `LEAF_FUZZ_SECS` when
/// set, else `cases` and no time limit; the seed from `LEAF_FUZZ_SEED`, else `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// At most this many cases.
    pub cases: u64,
    /// At most this long.
    pub time: Option<Duration>,
    /// The generator's seed.
    pub seed: u64,
}

impl Budget {
    /// The budget for a run whose defaults are `cases` cases from `seed`.
    pub fn from_env(cases: u64, seed: u64) -> Budget {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let time = var("LEAF_FUZZ_SECS").map(Duration::from_secs);
        Budget {
            // A time budget alone means as many cases as fit.
            cases: var("LEAF_FUZZ_CASES").unwrap_or(if time.is_some() { u64::MAX } else { cases }),
            time,
            seed: var("LEAF_FUZZ_SEED").unwrap_or(seed),
        }
    }
}

/// Runs `check` on mutations of `seeds` (each seed itself first) within `budget`; returns
/// the number of cases run. A panicking case is printed (hex, seed, case) and re-raised.
pub fn run(name: &str, seeds: &[&[u8]], budget: Budget, check: impl FnMut(&[u8])) -> u64 {
    run_generated(
        name,
        budget,
        |rng, case| match usize::try_from(case).ok().and_then(|i| seeds.get(i)) {
            Some(seed) => seed.to_vec(),
            None => mutate(rng, seeds),
        },
        check,
    )
}

/// Runs `check` on the inputs `generate` makes (from the run's generator and the case
/// number) within `budget`; returns the number of cases run. A panicking case is printed
/// (hex, seed, case) and re-raised.
pub fn run_generated(
    name: &str,
    budget: Budget,
    mut generate: impl FnMut(&mut Rng, u64) -> Vec<u8>,
    mut check: impl FnMut(&[u8]),
) -> u64 {
    let start = Instant::now();
    let mut rng = Rng::new(budget.seed);
    let mut case = 0u64;
    while case < budget.cases && budget.time.is_none_or(|t| start.elapsed() < t) {
        let input = generate(&mut rng, case);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if let Err(panic) = outcome {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!(
                "fuzz {name}: case {case} (LEAF_FUZZ_SEED={}) failed on input (hex) {hex}",
                budget.seed
            );
            std::panic::resume_unwind(panic);
        }
        case += 1;
    }
    eprintln!(
        "fuzz {name}: {case} cases in {:.1}s, seed {}",
        start.elapsed().as_secs_f64(),
        budget.seed
    );
    case
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_reproducible_and_vary() {
        let seeds: [&[u8]; 2] = [b"LS+ foo.bar\r\n", b"PING\r\n"];
        let a: Vec<Vec<u8>> = {
            let mut rng = Rng::new(7);
            (0..100).map(|_| mutate(&mut rng, &seeds)).collect()
        };
        let mut rng = Rng::new(7);
        let b: Vec<Vec<u8>> = (0..100).map(|_| mutate(&mut rng, &seeds)).collect();
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
        assert!(distinct.len() > 50, "{}", distinct.len());
    }

    #[test]
    fn a_failing_case_is_reported_and_re_raised() {
        let seeds: [&[u8]; 1] = [b"ok"];
        let budget = Budget {
            cases: 1000,
            time: None,
            seed: 1,
        };
        let caught = std::panic::catch_unwind(|| {
            run("test", &seeds, budget, |d| assert!(!d.contains(&b'\n')));
        });
        assert!(
            caught.is_err(),
            "a mutation with a newline is found and re-raised"
        );
    }
}
