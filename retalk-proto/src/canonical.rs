//! Canonical JSON: Python's
//! `json.dumps(args, sort_keys=True, separators=(",", ":"))`, byte for byte:
//! everything outside printable ASCII (DEL included, as Python does and the
//! captured vectors show) is escaped as `\uXXXX`.
//!
//! Signatures cover `sha256(canon(args))`, so a single differing escape or
//! number format makes every request from a Python client fail. The value is
//! hashed as parsed (serde_json with `arbitrary_precision`, so integers of any
//! size keep their digits, as Python ints do).

use serde_json::{Map, Number, Value};

use crate::ids::sha256_hex;

/// The canonical text of a JSON value.
pub fn canonical(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value);
    out
}

/// `hex(sha256(canonical(value)))`: the args hash that requests sign.
pub fn args_hash(value: &Value) -> String {
    sha256_hex(&canonical(value))
}

/// [`args_hash`] of an object given as its map.
pub fn map_hash(map: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(128);
    write_object(&mut out, map);
    sha256_hex(&out)
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => push_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    // Sorted by code point, as Python's sort_keys does; explicit so a map
    // type that keeps insertion order cannot change the hash.
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

fn write_number(out: &mut String, n: &Number) {
    let literal = n.to_string();
    let is_integer = !literal.contains(['.', 'e', 'E']);
    if is_integer {
        // Python ints print their digits; "-0" parses to 0.
        if literal
            .strip_prefix('-')
            .is_some_and(|d| d.bytes().all(|b| b == b'0'))
        {
            out.push('0');
        } else {
            out.push_str(&literal);
        }
    } else {
        let x: f64 = literal.parse().unwrap_or(f64::NAN);
        out.push_str(&python_float_repr(x));
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, fixed notation for
/// decimal exponents in [-4, 16), scientific (`1e+16`, `1e-05`) otherwise.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sci = format!("{x:e}"); // e.g. "-1.5e300", "1e-5", "0e0"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

/// Appends `s` as a JSON string the way Python writes it with
/// `ensure_ascii` (the default of `json.dumps`).
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        for (x, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.789, "123456.789"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (-2.5e-300, "-2.5e-300"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }

    /// Found by the canonical_json fuzz target: a float literal beyond f64
    /// becomes inf in Python too, which `json.dumps` prints as `Infinity`.
    #[test]
    fn out_of_range_floats_print_like_python() {
        let v: Value = serde_json::from_str("39e3953952").unwrap();
        assert_eq!(canonical(&v), "Infinity");
        let v: Value = serde_json::from_str("-1e400").unwrap();
        assert_eq!(canonical(&v), "-Infinity");
    }

    #[test]
    fn numbers_keep_python_forms() {
        let v: Value =
            serde_json::from_str(r#"[-0, 12345678901234567890123, 1E5, 2.50, -0.0]"#).unwrap();
        assert_eq!(
            canonical(&v),
            "[0,12345678901234567890123,100000.0,2.5,-0.0]"
        );
    }
}
