//! The byte layouts of keys and values.
//!
//! Values are a version byte then fields in a fixed order: strings as a
//! big-endian u64 length and UTF-8 bytes, numbers as 8 big-endian bytes
//! (floats by their bit pattern, so every `f64` comes back exactly),
//! options and booleans as one tag byte. No schema library: each record is
//! written and read by a pair of functions next to the code that uses it.
//!
//! Keys are built so that sled's byte order is the order the protocol
//! needs: counters are big-endian u64, timestamps use [`ord_f64`], and a
//! user id (always 32 lowercase hex bytes, validated by `UserId`) is a
//! fixed-width prefix, so a prefix scan on it never matches another user.

use retalk_proto::ids::UserId;
use retalk_proto::relay::StoreError;

/// The first byte of every value: a later layout can be told apart.
const VERSION: u8 = 1;

/// The width of a user id inside a key.
pub(crate) const ID_LEN: usize = 32;

/// A value being written.
pub(crate) struct Enc(Vec<u8>);

impl Enc {
    pub(crate) fn new() -> Self {
        Enc(vec![VERSION])
    }

    pub(crate) fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(&(s.len() as u64).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    pub(crate) fn u64(mut self, x: u64) -> Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }

    pub(crate) fn i64(mut self, x: i64) -> Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }

    pub(crate) fn f64(self, x: f64) -> Self {
        self.u64(x.to_bits())
    }

    pub(crate) fn bool(mut self, b: bool) -> Self {
        self.0.push(u8::from(b));
        self
    }

    pub(crate) fn opt_str(self, s: Option<&str>) -> Self {
        match s {
            Some(s) => self.bool(true).str(s),
            None => self.bool(false),
        }
    }

    pub(crate) fn opt_f64(self, x: Option<f64>) -> Self {
        match x {
            Some(x) => self.bool(true).f64(x),
            None => self.bool(false),
        }
    }

    pub(crate) fn done(self) -> Vec<u8> {
        self.0
    }
}

/// A value being read; every read checks the bounds, and [`Dec::end`]
/// checks that nothing is left over.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::msg(format!("sled store: corrupt {what} record"))
}

impl<'a> Dec<'a> {
    /// `what` names the record in error messages.
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Result<Self, StoreError> {
        match buf.split_first() {
            Some((&VERSION, rest)) => Ok(Dec { buf: rest, what }),
            Some((v, _)) => Err(StoreError::msg(format!(
                "sled store: {what} record has layout version {v}; this retalk knows {VERSION} \
                 (written by a newer retalk?)"
            ))),
            None => Err(corrupt(what)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(corrupt(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn eight(&mut self) -> Result<[u8; 8], StoreError> {
        self.take(8)?.try_into().map_err(|_| corrupt(self.what))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.eight()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_be_bytes(self.eight()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, StoreError> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub(crate) fn bool(&mut self) -> Result<bool, StoreError> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(corrupt(self.what)),
        }
    }

    /// A string borrowed from the value (for comparisons without a copy).
    pub(crate) fn str_ref(&mut self) -> Result<&'a str, StoreError> {
        let len = usize::try_from(self.u64()?).map_err(|_| corrupt(self.what))?;
        std::str::from_utf8(self.take(len)?).map_err(|_| corrupt(self.what))
    }

    pub(crate) fn str(&mut self) -> Result<String, StoreError> {
        self.str_ref().map(str::to_owned)
    }

    pub(crate) fn user(&mut self) -> Result<UserId, StoreError> {
        user_id(self.str()?, self.what)
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, StoreError> {
        Ok(if self.bool()? {
            Some(self.str()?)
        } else {
            None
        })
    }

    pub(crate) fn opt_f64(&mut self) -> Result<Option<f64>, StoreError> {
        Ok(if self.bool()? {
            Some(self.f64()?)
        } else {
            None
        })
    }

    /// Fails if bytes are left: a value is read whole or not at all.
    /// Whether the value is used up (a record written before a trailing
    /// field was added).
    pub(crate) fn at_end(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn end(self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(corrupt(self.what))
        }
    }
}

pub(crate) fn user_id(s: String, what: &str) -> Result<UserId, StoreError> {
    UserId::try_from(s).map_err(|_| corrupt(what))
}

/// A float as 8 bytes whose byte order is the numeric order (negative
/// numbers have every bit flipped, others the sign bit set). NaN, which has
/// no order, is taken as the lowest finite number, as the SQLite backend
/// does.
pub(crate) fn ord_f64(x: f64) -> [u8; 8] {
    let x = if x.is_nan() { f64::MIN } else { x };
    let bits = x.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

/// A key made of parts laid end to end.
pub(crate) fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A stored big-endian counter or sequence number.
pub(crate) fn be_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let eight: [u8; 8] = bytes.try_into().map_err(|_| corrupt(what))?;
    Ok(u64::from_be_bytes(eight))
}

/// The 8-byte big-endian suffix of a key (a sequence number).
pub(crate) fn seq_suffix(key: &[u8], what: &str) -> Result<u64, StoreError> {
    let start = key.len().checked_sub(8).ok_or_else(|| corrupt(what))?;
    be_u64(&key[start..], what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ord_f64_sorts_like_numbers() {
        let xs = [
            f64::NEG_INFINITY,
            f64::MIN,
            -1.5e10,
            -1.0,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            1.0 + f64::EPSILON,
            1.7e9,
            f64::MAX,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ord_f64(w[0]) <= ord_f64(w[1]), "{} vs {}", w[0], w[1]);
        }
        assert!(ord_f64(1.0) < ord_f64(2.0));
        assert_eq!(ord_f64(f64::NAN), ord_f64(f64::MIN));
    }

    #[test]
    fn values_round_trip_exactly() {
        let v = Enc::new()
            .str("h\u{e9}llo")
            .f64(0.1 + 0.2)
            .i64(-7)
            .opt_str(None)
            .opt_f64(Some(f64::NEG_INFINITY))
            .bool(true)
            .done();
        let mut d = Dec::new(&v, "test").unwrap();
        assert_eq!(d.str().unwrap(), "h\u{e9}llo");
        assert_eq!(d.f64().unwrap().to_bits(), (0.1f64 + 0.2).to_bits());
        assert_eq!(d.i64().unwrap(), -7);
        assert_eq!(d.opt_str().unwrap(), None);
        assert_eq!(d.opt_f64().unwrap(), Some(f64::NEG_INFINITY));
        assert!(d.bool().unwrap());
        d.end().unwrap();
    }

    #[test]
    fn truncated_or_padded_values_are_corrupt() {
        let v = Enc::new().str("abc").done();
        let mut d = Dec::new(&v[..v.len() - 1], "test").unwrap();
        assert!(d.str().is_err());
        let mut padded = v.clone();
        padded.push(0);
        let mut d = Dec::new(&padded, "test").unwrap();
        d.str().unwrap();
        assert!(d.end().is_err());
        assert!(Dec::new(&[], "test").is_err());
        assert!(Dec::new(&[9, 0], "test").is_err());
    }
}
