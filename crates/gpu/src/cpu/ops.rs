//! The arithmetic of one component, as naga's SPIR-V computes it on a
//! Vulkan device: integers wrap, integer division guards its divisor the
//! way naga's `naga_div`/`naga_mod` wrappers do, float comparisons are
//! ordered, and float-to-integer conversions clamp first.

use naga::{BinaryOperator, MathFunction, UnaryOperator};

use super::unsupported;
use super::value::{Kind, Value, internal};
use crate::GpuError;

fn float(word: u32) -> f32 {
    f32::from_bits(word)
}

fn bits(value: f32) -> u32 {
    value.to_bits()
}

/// `left op right`, component by component; a scalar operand is used for
/// every component of a vector one.
pub(super) fn binary(
    op: BinaryOperator,
    kind: Kind,
    left: &[u32],
    right: &[u32],
) -> Result<Value, GpuError> {
    if left.len() == 1 && right.len() == 1 {
        return Ok(Value::scalar(binary_word(op, kind, left[0], right[0])?));
    }
    let len = left.len().max(right.len());
    let mut words = [0; 4];
    for (at, word) in words.iter_mut().enumerate().take(len) {
        let a = left[if left.len() == 1 { 0 } else { at }];
        let b = right[if right.len() == 1 { 0 } else { at }];
        *word = binary_word(op, kind, a, b)?;
    }
    Ok(Value::Words {
        len: len as u32,
        words,
    })
}

pub(super) fn binary_word(op: BinaryOperator, kind: Kind, a: u32, b: u32) -> Result<u32, GpuError> {
    use BinaryOperator as Op;
    let truth = |value: bool| u32::from(value);
    Ok(match kind {
        Kind::Float => {
            let (x, y) = (float(a), float(b));
            match op {
                Op::Add => bits(x + y),
                Op::Subtract => bits(x - y),
                Op::Multiply => bits(x * y),
                Op::Equal => truth(x == y),
                // naga writes `!=` as an ordered comparison: false when
                // either side is NaN.
                Op::NotEqual => truth(x.partial_cmp(&y).is_some_and(|order| order.is_ne())),
                Op::Less => truth(x < y),
                Op::LessEqual => truth(x <= y),
                Op::Greater => truth(x > y),
                Op::GreaterEqual => truth(x >= y),
                _ => return Err(unsupported(&format!("the float operator {op:?}"))),
            }
        }
        Kind::Bool => match op {
            Op::Equal => truth(a == b),
            Op::NotEqual => truth(a != b),
            Op::And | Op::LogicalAnd => a & b,
            Op::InclusiveOr | Op::LogicalOr => a | b,
            _ => return Err(internal("a bool operator")),
        },
        Kind::Sint | Kind::Uint => {
            let signed = kind == Kind::Sint;
            let (x, y) = (a as i32, b as i32);
            match op {
                Op::Add => a.wrapping_add(b),
                Op::Subtract => a.wrapping_sub(b),
                Op::Multiply => a.wrapping_mul(b),
                Op::Divide | Op::Modulo => divide(op, signed, a, b),
                Op::Equal => truth(a == b),
                Op::NotEqual => truth(a != b),
                Op::Less => truth(if signed { x < y } else { a < b }),
                Op::LessEqual => truth(if signed { x <= y } else { a <= b }),
                Op::Greater => truth(if signed { x > y } else { a > b }),
                Op::GreaterEqual => truth(if signed { x >= y } else { a >= b }),
                Op::And => a & b,
                Op::ExclusiveOr => a ^ b,
                Op::InclusiveOr => a | b,
                Op::ShiftLeft => a << (b & 31),
                Op::ShiftRight if signed => (x >> (b & 31)) as u32,
                Op::ShiftRight => a >> (b & 31),
                Op::LogicalAnd | Op::LogicalOr => return Err(internal("a logical integer op")),
            }
        }
    })
}

/// Integer `/` and `%` as naga's wrappers compute them: a zero divisor,
/// or `i32::MIN / -1`, divides by one instead; signed `%` is
/// `a - b * (a / b)`.
fn divide(op: BinaryOperator, signed: bool, a: u32, b: u32) -> u32 {
    if signed {
        let (x, y) = (a as i32, b as i32);
        let y = if y == 0 || (x == i32::MIN && y == -1) {
            1
        } else {
            y
        };
        let quotient = x.wrapping_div(y);
        match op {
            BinaryOperator::Divide => quotient as u32,
            _ => x.wrapping_sub(y.wrapping_mul(quotient)) as u32,
        }
    } else {
        let b = if b == 0 { 1 } else { b };
        match op {
            BinaryOperator::Divide => a / b,
            _ => a % b,
        }
    }
}

pub(super) fn unary(op: UnaryOperator, kind: Kind, operand: &[u32]) -> Result<Value, GpuError> {
    let mut words = [0; 4];
    for (word, a) in words.iter_mut().zip(operand) {
        *word = match (op, kind) {
            // A sign flip, as IEEE negation is (NaNs included).
            (UnaryOperator::Negate, Kind::Float) => a ^ 0x8000_0000,
            (UnaryOperator::Negate, _) => a.wrapping_neg(),
            (UnaryOperator::LogicalNot, _) => a ^ 1,
            (UnaryOperator::BitwiseNot, _) => !a,
        };
    }
    Ok(Value::Words {
        len: operand.len() as u32,
        words,
    })
}

/// The builtin `fun` over its arguments' components; `kind` is the first
/// argument's.
pub(super) fn math(fun: MathFunction, kind: Kind, args: &[&[u32]]) -> Result<Value, GpuError> {
    use MathFunction as Mf;
    let first = args
        .first()
        .ok_or_else(|| internal("a builtin without arguments"))?;
    match fun {
        Mf::Dot => {
            let (a, b) = (first, args.get(1).ok_or_else(|| internal("dot"))?);
            if kind == Kind::Float {
                return Err(unsupported("float `dot`"));
            }
            let sum = a
                .iter()
                .zip(b.iter())
                .fold(0u32, |sum, (x, y)| sum.wrapping_add(x.wrapping_mul(*y)));
            return Ok(Value::scalar(sum));
        }
        Mf::Dot4I8Packed | Mf::Dot4U8Packed => {
            let (a, b) = (first[0], args.get(1).ok_or_else(|| internal("dot4"))?[0]);
            let signed = fun == Mf::Dot4I8Packed;
            let sum = (0..4).fold(0u32, |sum, byte| {
                let (x, y) = (byte_of(a, byte, signed), byte_of(b, byte, signed));
                sum.wrapping_add(x.wrapping_mul(y))
            });
            return Ok(Value::scalar(sum));
        }
        Mf::Pack4xI8 | Mf::Pack4xU8 | Mf::Pack4xI8Clamp | Mf::Pack4xU8Clamp => {
            let packed = first.iter().enumerate().fold(0u32, |packed, (at, word)| {
                let byte = match fun {
                    Mf::Pack4xI8Clamp => (*word as i32).clamp(-128, 127) as u32,
                    Mf::Pack4xU8Clamp => (*word).min(255),
                    _ => *word,
                };
                packed | (byte & 0xff) << (8 * at)
            });
            return Ok(Value::scalar(packed));
        }
        Mf::Unpack4xI8 | Mf::Unpack4xU8 => {
            let signed = fun == Mf::Unpack4xI8;
            let mut words = [0; 4];
            for (byte, word) in words.iter_mut().enumerate() {
                *word = byte_of(first[0], byte as u32, signed);
            }
            return Ok(Value::Words { len: 4, words });
        }
        _ => {}
    }
    let mut words = [0; 4];
    for (at, word) in words.iter_mut().enumerate().take(first.len()) {
        // Scalar arguments (the offset and count of extractBits and
        // insertBits) apply to every component.
        let arg = |index: usize| -> Result<u32, GpuError> {
            let arg = args
                .get(index)
                .ok_or_else(|| internal("a missing argument"))?;
            let at = if arg.len() == 1 { 0 } else { at };
            arg.get(at)
                .copied()
                .ok_or_else(|| internal("arguments of different sizes"))
        };
        *word = math_word(fun, kind, first[at], &arg)?;
    }
    Ok(Value::Words {
        len: first.len() as u32,
        words,
    })
}

/// Byte `byte` of `word`, sign-extended when `signed`.
fn byte_of(word: u32, byte: u32, signed: bool) -> u32 {
    let value = (word >> (8 * byte)) & 0xff;
    if signed {
        value as u8 as i8 as i32 as u32
    } else {
        value
    }
}

fn math_word(
    fun: MathFunction,
    kind: Kind,
    a: u32,
    arg: &dyn Fn(usize) -> Result<u32, GpuError>,
) -> Result<u32, GpuError> {
    use MathFunction as Mf;
    let signed = kind == Kind::Sint;
    if kind == Kind::Float {
        let x = float(a);
        return Ok(match fun {
            Mf::Abs => a & 0x7fff_ffff,
            Mf::Floor => bits(x.floor()),
            Mf::Ceil => bits(x.ceil()),
            Mf::Trunc => bits(x.trunc()),
            _ => return Err(unsupported(&format!("the float builtin {fun:?}"))),
        });
    }
    Ok(match fun {
        Mf::Abs if signed => (a as i32).wrapping_abs() as u32,
        Mf::Abs => a,
        Mf::Min => min(signed, a, arg(1)?),
        Mf::Max => max(signed, a, arg(1)?),
        // Written as min(max(e, low), high), never as a median of three.
        Mf::Clamp => min(signed, max(signed, a, arg(1)?), arg(2)?),
        Mf::Sign if signed => (a as i32).signum() as u32,
        Mf::CountTrailingZeros => a.trailing_zeros(),
        Mf::CountLeadingZeros => a.leading_zeros(),
        Mf::CountOneBits => a.count_ones(),
        Mf::ReverseBits => a.reverse_bits(),
        Mf::FirstTrailingBit if a == 0 => u32::MAX,
        Mf::FirstTrailingBit => a.trailing_zeros(),
        Mf::FirstLeadingBit => {
            // Signed: the highest bit that differs from the sign.
            let bits = if signed && (a as i32) < 0 { !a } else { a };
            if bits == 0 {
                u32::MAX
            } else {
                31 - bits.leading_zeros()
            }
        }
        Mf::ExtractBits => {
            let (offset, count) = bit_range(arg(1)?, arg(2)?);
            if count == 0 {
                0
            } else if signed {
                (((a << (32 - offset - count)) as i32) >> (32 - count)) as u32
            } else {
                (a >> offset) & mask(count)
            }
        }
        Mf::InsertBits => {
            let (offset, count) = bit_range(arg(2)?, arg(3)?);
            if count == 0 {
                a
            } else {
                let mask = mask(count) << offset;
                (a & !mask) | ((arg(1)? << offset) & mask)
            }
        }
        _ => return Err(unsupported(&format!("the integer builtin {fun:?}"))),
    })
}

fn min(signed: bool, a: u32, b: u32) -> u32 {
    if signed {
        (a as i32).min(b as i32) as u32
    } else {
        a.min(b)
    }
}

fn max(signed: bool, a: u32, b: u32) -> u32 {
    if signed {
        (a as i32).max(b as i32) as u32
    } else {
        a.max(b)
    }
}

/// extractBits' and insertBits' offset and count, clamped as naga clamps
/// them (WGSL's rule): `o = min(offset, 32)`, `c = min(count, 32 - o)`.
fn bit_range(offset: u32, count: u32) -> (u32, u32) {
    let offset = offset.min(32);
    (offset, count.min(32 - offset))
}

/// The low `count` bits set, `count` in 1..=32.
fn mask(count: u32) -> u32 {
    u32::MAX >> (32 - count)
}

/// Converts one component of kind `from` to `to`: a bitcast when
/// `convert` is false, a value conversion otherwise.
pub(super) fn convert(from: Kind, to: Kind, convert: bool, a: u32) -> u32 {
    if !convert || from == to {
        return a;
    }
    match (from, to) {
        (Kind::Bool, Kind::Float) => bits(if a != 0 { 1.0 } else { 0.0 }),
        (Kind::Bool, _) => a,
        (Kind::Float, Kind::Bool) => u32::from(float(a) != 0.0),
        (_, Kind::Bool) => u32::from(a != 0),
        // naga clamps before converting, to the range of floats the
        // integer type holds; its clamp takes NaN to the lower bound.
        (Kind::Float, Kind::Sint) => {
            let x = float(a);
            if x.is_nan() {
                i32::MIN as u32
            } else {
                x.clamp(-2_147_483_648.0, 2_147_483_520.0) as i32 as u32
            }
        }
        (Kind::Float, Kind::Uint) => {
            let x = float(a);
            if x.is_nan() {
                0
            } else {
                x.clamp(0.0, 4_294_967_040.0) as u32
            }
        }
        (Kind::Sint, Kind::Float) => bits(a as i32 as f32),
        (Kind::Uint, Kind::Float) => bits(a as f32),
        // Between i32 and u32 the bits stay.
        _ => a,
    }
}
