//! Register values: 16-bit words (or bits) to published JSON numbers and back.
//!
//! Reading: each word's bytes are put in order (`byte_order`), 32-bit types join two
//! words (`word_order`), then `value * scale + offset`. Writing runs the same steps
//! backwards: `(value - offset) / scale`, rounded for integer types and range-checked.

use serde_json::{Number, Value};

use crate::gateway::config::modbus::{Order, Register, ValueType};

/// Why a value given in a write request cannot be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// A number was expected (registers).
    #[error("expected a number, got {0}")]
    NotANumber(String),
    /// `true` or `false` was expected (coils).
    #[error("expected true or false, got {0}")]
    NotABool(String),
    /// The register holds several values: an array of exactly that many is needed.
    #[error("expected {expected} values, got {got}")]
    WrongCount {
        /// The register's `count`.
        expected: usize,
        /// How many were given.
        got: usize,
    },
    /// After inverse scaling, the value does not fit the type.
    #[error("{value} is out of range for {ty} (raw value {raw})")]
    OutOfRange {
        /// The value as given.
        value: f64,
        /// The raw value it scales to.
        raw: f64,
        /// The register type.
        ty: &'static str,
    },
}

/// What one write request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// Register words, in wire order.
    Words(Vec<u16>),
    /// Coil states.
    Bits(Vec<bool>),
}

/// Puts a word's bytes in order: a little-endian word has its bytes swapped on the wire.
fn order_bytes(word: u16, order: Order) -> u16 {
    match order {
        Order::Big => word,
        Order::Little => word.swap_bytes(),
    }
}

/// The 32-bit value of two consecutive (already byte-ordered) words.
fn join(first: u16, second: u16, order: Order) -> u32 {
    let (high, low) = match order {
        Order::Big => (first, second),
        Order::Little => (second, first),
    };
    (u32::from(high) << 16) | u32::from(low)
}

/// The two words, in wire order, of a 32-bit value.
fn split(value: u32, order: Order) -> [u16; 2] {
    // Truncation is the point: the high and the low half.
    let (high, low) = ((value >> 16) as u16, value as u16);
    match order {
        Order::Big => [high, low],
        Order::Little => [low, high],
    }
}

/// A raw value before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Raw {
    Int(i64),
    Float(f64),
}

/// Decodes the values of `reg` from its words. Words beyond what `count` values need
/// are ignored; missing words yield fewer values.
fn decode_raw(reg: &Register, words: &[u16]) -> Vec<Raw> {
    let ty = reg.value_type();
    let width = usize::from(ty.width());
    words
        .chunks_exact(width)
        .take(usize::from(reg.count))
        .map(|chunk| {
            let w = |i: usize| order_bytes(chunk.get(i).copied().unwrap_or(0), reg.byte_order);
            match ty {
                ValueType::U16 | ValueType::Bool => Raw::Int(i64::from(w(0))),
                ValueType::I16 => Raw::Int(i64::from(w(0) as i16)),
                ValueType::U32 => Raw::Int(i64::from(join(w(0), w(1), reg.word_order))),
                ValueType::I32 => Raw::Int(i64::from(join(w(0), w(1), reg.word_order) as i32)),
                ValueType::F32 => {
                    let f = f32::from_bits(join(w(0), w(1), reg.word_order));
                    // The shortest decimal that reads back as this f32: 230.1, not
                    // 230.10000610351562.
                    Raw::Float(f.to_string().parse().unwrap_or(f64::from(f)))
                }
            }
        })
        .collect()
}

/// Rounds away the binary noise of scaling (2301 * 0.1 = 230.10000000000002) by
/// keeping 15 significant digits.
fn tidy(v: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    format!("{v:.14e}").parse().unwrap_or(v)
}

/// One scaled value as JSON: integers stay integers when unscaled; non-finite floats
/// (a NaN in an f32 register) become `null`.
fn scaled(reg: &Register, raw: Raw) -> Value {
    let float = match raw {
        Raw::Int(i) if reg.is_unscaled() => return Value::Number(Number::from(i)),
        Raw::Int(i) => tidy(i as f64 * reg.scale + reg.offset),
        Raw::Float(f) if reg.is_unscaled() => f,
        Raw::Float(f) => tidy(f * reg.scale + reg.offset),
    };
    Number::from_f64(float).map_or(Value::Null, Value::Number)
}

/// The published `value` of a register read: a number, or an array when `count > 1`.
pub fn decode_words(reg: &Register, words: &[u16]) -> Value {
    let mut values: Vec<Value> = decode_raw(reg, words)
        .into_iter()
        .map(|raw| scaled(reg, raw))
        .collect();
    if reg.count == 1 {
        values.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(values)
    }
}

/// The published `value` of a coil or discrete input read: a bool, or an array.
pub fn decode_bits(reg: &Register, bits: &[bool]) -> Value {
    let mut values: Vec<Value> = bits
        .iter()
        .take(usize::from(reg.count))
        .map(|&b| Value::Bool(b))
        .collect();
    if reg.count == 1 {
        values.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(values)
    }
}

/// The published body: `value` first, then `unit` when one is configured.
#[derive(serde::Serialize)]
struct Payload<'a> {
    value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
}

/// The whole payload: `{"value": ..., "unit": ...}` (`unit` only when configured).
pub fn payload(reg: &Register, value: Value) -> Vec<u8> {
    let body = Payload {
        value,
        unit: reg.unit.as_deref(),
    };
    // Serializing plain JSON values cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The values a write request gives: one, or an array of `count` when `count > 1`.
fn values_of(reg: &Register, value: &Value) -> Result<Vec<Value>, EncodeError> {
    let count = usize::from(reg.count);
    match value {
        Value::Array(items) if items.len() == count => Ok(items.clone()),
        Value::Array(items) => Err(EncodeError::WrongCount {
            expected: count,
            got: items.len(),
        }),
        single if count == 1 => Ok(vec![single.clone()]),
        _ => Err(EncodeError::WrongCount {
            expected: count,
            got: 1,
        }),
    }
}

/// Encodes a write of `value` to `reg` (inverse scaling, type, byte and word order).
///
/// # Errors
/// [`EncodeError`] when the value has the wrong shape or does not fit the type.
pub fn encode(reg: &Register, value: &Value) -> Result<Encoded, EncodeError> {
    let items = values_of(reg, value)?;
    let ty = reg.value_type();
    if ty == ValueType::Bool {
        return items
            .iter()
            .map(|v| match v {
                Value::Bool(b) => Ok(*b),
                Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
                Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
                other => Err(EncodeError::NotABool(other.to_string())),
            })
            .collect::<Result<Vec<bool>, _>>()
            .map(Encoded::Bits);
    }
    let mut words = Vec::with_capacity(items.len() * usize::from(ty.width()));
    for item in &items {
        let value = item
            .as_f64()
            .ok_or_else(|| EncodeError::NotANumber(item.to_string()))?;
        let raw = (value - reg.offset) / reg.scale;
        let out_of_range = || EncodeError::OutOfRange {
            value,
            raw,
            ty: ty.as_str(),
        };
        let int = |min: f64, max: f64| {
            let r = raw.round();
            if r.is_finite() && (min..=max).contains(&r) {
                Ok(r)
            } else {
                Err(out_of_range())
            }
        };
        // Each `as` below converts a value already checked to be in the target's range.
        let bits32 = match ty {
            ValueType::U16 | ValueType::Bool => {
                words.push(order_bytes(int(0.0, 65535.0)? as u16, reg.byte_order));
                continue;
            }
            ValueType::I16 => {
                let w = int(-32768.0, 32767.0)? as i16 as u16;
                words.push(order_bytes(w, reg.byte_order));
                continue;
            }
            ValueType::U32 => int(0.0, 4_294_967_295.0)? as u32,
            ValueType::I32 => int(-2_147_483_648.0, 2_147_483_647.0)? as i32 as u32,
            ValueType::F32 => {
                let f = raw as f32;
                if !f.is_finite() {
                    return Err(out_of_range());
                }
                f.to_bits()
            }
        };
        words.extend(
            split(bits32, reg.word_order)
                .into_iter()
                .map(|w| order_bytes(w, reg.byte_order)),
        );
    }
    Ok(Encoded::Words(words))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::modbus::RegisterKind;
    use serde_json::json;

    fn reg(ty: ValueType, byte_order: Order, word_order: Order) -> Register {
        Register {
            name: "r".into(),
            value_type: Some(ty),
            byte_order,
            word_order,
            ..Register::default()
        }
    }

    #[test]
    fn sixteen_bit_types_and_byte_order() {
        let u = reg(ValueType::U16, Order::Big, Order::Big);
        assert_eq!(decode_words(&u, &[0x1234]), json!(0x1234));
        let u_le = reg(ValueType::U16, Order::Little, Order::Big);
        assert_eq!(decode_words(&u_le, &[0x3412]), json!(0x1234));
        let i = reg(ValueType::I16, Order::Big, Order::Big);
        assert_eq!(decode_words(&i, &[0xFFFE]), json!(-2));
        assert_eq!(decode_words(&i, &[0x8000]), json!(-32768));
        let i_le = reg(ValueType::I16, Order::Little, Order::Big);
        assert_eq!(decode_words(&i_le, &[0xFEFF]), json!(-2));
    }

    #[test]
    fn thirty_two_bit_types_in_every_order() {
        // 0x12345678 as (first, second) wire words for each byte/word order.
        let layouts = [
            (Order::Big, Order::Big, [0x1234, 0x5678]),
            (Order::Big, Order::Little, [0x5678, 0x1234]),
            (Order::Little, Order::Big, [0x3412, 0x7856]),
            (Order::Little, Order::Little, [0x7856, 0x3412]),
        ];
        for (bo, wo, words) in layouts {
            let u = reg(ValueType::U32, bo, wo);
            assert_eq!(
                decode_words(&u, &words),
                json!(0x1234_5678),
                "{bo:?} {wo:?}"
            );
            assert_eq!(
                encode(&u, &json!(0x1234_5678)),
                Ok(Encoded::Words(words.to_vec()))
            );
        }
        let i = reg(ValueType::I32, Order::Big, Order::Little);
        assert_eq!(decode_words(&i, &[0xFFFF, 0xFFFF]), json!(-1));
        assert_eq!(
            decode_words(&i, &[0x0000, 0x8000]),
            json!(i64::from(i32::MIN))
        );
        assert_eq!(
            encode(&i, &json!(-2)),
            Ok(Encoded::Words(vec![0xFFFE, 0xFFFF]))
        );
        // 230.1f32 = 0x4366199A.
        let f = reg(ValueType::F32, Order::Big, Order::Big);
        assert_eq!(decode_words(&f, &[0x4366, 0x199A]), json!(230.1));
        let f_swapped = reg(ValueType::F32, Order::Big, Order::Little);
        assert_eq!(decode_words(&f_swapped, &[0x199A, 0x4366]), json!(230.1));
        assert_eq!(
            encode(&f_swapped, &json!(230.1)),
            Ok(Encoded::Words(vec![0x199A, 0x4366]))
        );
        let u = reg(ValueType::U32, Order::Big, Order::Big);
        assert_eq!(decode_words(&u, &[0xFFFF, 0xFFFF]), json!(4_294_967_295u32));
    }

    #[test]
    fn scale_and_offset() {
        let mut r = reg(ValueType::U16, Order::Big, Order::Big);
        r.scale = 0.1;
        assert_eq!(decode_words(&r, &[2301]), json!(230.1));
        assert_eq!(encode(&r, &json!(230.1)), Ok(Encoded::Words(vec![2301])));
        r.offset = -40.0;
        r.scale = 0.5;
        assert_eq!(decode_words(&r, &[100]), json!(10.0));
        assert_eq!(encode(&r, &json!(10)), Ok(Encoded::Words(vec![100])));
        let mut t = reg(ValueType::I16, Order::Big, Order::Big);
        t.scale = 0.01;
        assert_eq!(decode_words(&t, &[(-1234i16) as u16]), json!(-12.34));
        let mut f = reg(ValueType::F32, Order::Big, Order::Big);
        f.scale = 1000.0;
        assert_eq!(decode_words(&f, &[0x3F80, 0x0000]), json!(1000.0));
        assert_eq!(
            encode(&f, &json!(1000)),
            Ok(Encoded::Words(vec![0x3F80, 0]))
        );
    }

    #[test]
    fn arrays_bits_and_payload() {
        let mut r = reg(ValueType::I16, Order::Big, Order::Big);
        r.count = 3;
        assert_eq!(decode_words(&r, &[1, 0xFFFF, 3]), json!([1, -1, 3]));
        assert_eq!(
            encode(&r, &json!([1, -1, 3])),
            Ok(Encoded::Words(vec![1, 0xFFFF, 3]))
        );
        assert_eq!(
            encode(&r, &json!(1)),
            Err(EncodeError::WrongCount {
                expected: 3,
                got: 1
            })
        );
        let coil = Register {
            name: "c".into(),
            kind: RegisterKind::Coil,
            ..Register::default()
        };
        assert_eq!(decode_bits(&coil, &[true, false, false]), json!(true));
        assert_eq!(encode(&coil, &json!(false)), Ok(Encoded::Bits(vec![false])));
        assert_eq!(encode(&coil, &json!(1)), Ok(Encoded::Bits(vec![true])));
        assert!(matches!(
            encode(&coil, &json!("on")),
            Err(EncodeError::NotABool(_))
        ));
        let coils = Register { count: 2, ..coil };
        assert_eq!(
            decode_bits(&coils, &[true, false, true]),
            json!([true, false])
        );
        let mut v = reg(ValueType::U16, Order::Big, Order::Big);
        v.unit = Some("V".into());
        assert_eq!(payload(&v, json!(1)), br#"{"value":1,"unit":"V"}"#.to_vec());
        v.unit = None;
        assert_eq!(payload(&v, json!([true])), br#"{"value":[true]}"#.to_vec());
    }

    #[test]
    fn out_of_range_and_bad_values() {
        let u = reg(ValueType::U16, Order::Big, Order::Big);
        assert!(matches!(
            encode(&u, &json!(65536)),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode(&u, &json!(-1)),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode(&u, &json!("1")),
            Err(EncodeError::NotANumber(_))
        ));
        assert_eq!(encode(&u, &json!(65535)), Ok(Encoded::Words(vec![0xFFFF])));
        assert_eq!(encode(&u, &json!([7])), Ok(Encoded::Words(vec![7])));
        let i = reg(ValueType::I16, Order::Big, Order::Big);
        assert!(matches!(
            encode(&i, &json!(32768)),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert_eq!(encode(&i, &json!(-32768)), Ok(Encoded::Words(vec![0x8000])));
        let f = reg(ValueType::F32, Order::Big, Order::Big);
        assert!(matches!(
            encode(&f, &json!(1e300)),
            Err(EncodeError::OutOfRange { .. })
        ));
        // NaN in an f32 register publishes null.
        assert_eq!(decode_words(&f, &[0x7FC0, 0]), Value::Null);
    }
}
