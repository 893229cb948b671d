//! Invite codes, sans IO: minting, and judging a redemption
//! (Python 0.3.0 `store.py@HEAD:213-304`).
//!
//! A code proves the requester was authorised by whoever issued it, not
//! that its keys belong to a particular person: it replaces the manual
//! add-back, never out-of-band fingerprint verification.

use base64::Engine;

use crate::ids::UserId;

/// Seconds a single-use code lives unless told otherwise (7 days).
pub const DEFAULT_EXPIRY_SECS: f64 = 7.0 * 86400.0;

/// Single-use (the default) or multi-use until revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteKind {
    Single,
    Permanent,
}

impl InviteKind {
    /// The word Python stores and prints (`single`, `permanent`).
    pub fn as_str(self) -> &'static str {
        match self {
            InviteKind::Single => "single",
            InviteKind::Permanent => "permanent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "single" => Some(InviteKind::Single),
            "permanent" => Some(InviteKind::Permanent),
            _ => None,
        }
    }
}

/// A minted code and what became of it (one `invite_codes` row).
#[derive(Debug, Clone, PartialEq)]
pub struct InviteRecord {
    pub code: String,
    pub kind: InviteKind,
    /// The local name to save the redeemer as (None: the card's name).
    pub peer: Option<String>,
    /// Unix seconds.
    pub created: f64,
    /// Unix seconds after which the code is dead (None: never).
    pub expires: Option<f64>,
    pub uses: u32,
    /// Who redeemed it, in order.
    pub used_by: Vec<UserId>,
    pub revoked: bool,
}

/// The outcome of a redemption (Python `use_invite`), and the reasons a
/// rejection record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// This requester already redeemed it (a resent request): re-acked,
    /// nothing shown.
    Duplicate,
    UnknownCode,
    Revoked,
    Expired,
    /// A single-use code someone else already redeemed.
    Consumed,
    /// The request's card does not hash to its keys, or is not the sender's.
    CardMismatch,
}

impl Outcome {
    /// Python's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Duplicate => "duplicate",
            Outcome::UnknownCode => "unknown-code",
            Outcome::Revoked => "revoked",
            Outcome::Expired => "expired",
            Outcome::Consumed => "consumed",
            Outcome::CardMismatch => "card-mismatch",
        }
    }
}

/// A new code: 16 random bytes in URL-safe base64 without padding (22
/// characters, Python `secrets.token_urlsafe(16)`), redrawn while it starts
/// with `-`, which a command line would read as a flag
/// (`store.py@HEAD:232-238`).
pub fn new_code() -> String {
    loop {
        let code =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        if !code.starts_with('-') {
            return code;
        }
    }
}

/// When a code minted `now` expires: `expires_days` None → 7 days for a
/// single-use code, never for a permanent one; `<= 0` → never; else that
/// many days (fractions allowed) (`store.py@HEAD:222-229`).
pub fn expiry(now: f64, permanent: bool, expires_days: Option<f64>) -> Option<f64> {
    match expires_days {
        None if permanent => None,
        None => Some(now + DEFAULT_EXPIRY_SECS),
        Some(d) if d <= 0.0 => None,
        Some(d) => Some(now + d * 86400.0),
    }
}

/// A fresh record for [`new_code`].
pub fn mint(
    now: f64,
    peer: Option<String>,
    permanent: bool,
    expires_days: Option<f64>,
) -> InviteRecord {
    InviteRecord {
        code: new_code(),
        kind: if permanent {
            InviteKind::Permanent
        } else {
            InviteKind::Single
        },
        peer,
        created: now,
        expires: expiry(now, permanent, expires_days),
        uses: 0,
        used_by: vec![],
        revoked: false,
    }
}

impl InviteRecord {
    /// Whether a new requester could still redeem it (`load_invites`'s
    /// `active`).
    pub fn active(&self, now: f64) -> bool {
        !self.revoked
            && self.expires.is_none_or(|e| now <= e)
            && (self.kind == InviteKind::Permanent || self.uses == 0)
    }

    /// Judges a redemption by `by` at `now`, in Python's order (duplicate
    /// first, then revoked, expired, consumed). On [`Outcome::Ok`] the
    /// record is updated (one more use, `by` appended); otherwise it is
    /// left as it was.
    pub fn redeem(&mut self, by: &UserId, now: f64) -> Outcome {
        if self.used_by.contains(by) {
            return Outcome::Duplicate;
        }
        if self.revoked {
            return Outcome::Revoked;
        }
        if self.expires.is_some_and(|e| now > e) {
            return Outcome::Expired;
        }
        if self.kind == InviteKind::Single && self.uses > 0 {
            return Outcome::Consumed;
        }
        self.uses += 1;
        self.used_by.push(by.clone());
        Outcome::Ok
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn u(c: char) -> UserId {
        UserId::parse(&c.to_string().repeat(32)).unwrap()
    }

    #[test]
    fn codes_never_start_with_a_dash() {
        for _ in 0..5000 {
            let c = new_code();
            assert_eq!(c.len(), 22);
            assert!(!c.starts_with('-'), "{c}");
            assert!(c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    #[test]
    fn expiry_defaults() {
        assert_eq!(expiry(10.0, false, None), Some(10.0 + DEFAULT_EXPIRY_SECS));
        assert_eq!(expiry(10.0, true, None), None);
        assert_eq!(expiry(10.0, false, Some(0.0)), None);
        assert_eq!(expiry(10.0, true, Some(1.0)), Some(10.0 + 86400.0));
    }

    #[test]
    fn single_use_code_outcomes() {
        let mut r = mint(100.0, Some("bob".into()), false, None);
        assert!(r.active(100.0));
        assert_eq!(r.redeem(&u('a'), 101.0), Outcome::Ok);
        assert_eq!(r.used_by, vec![u('a')]);
        assert!(!r.active(101.0));
        assert_eq!(r.redeem(&u('a'), 102.0), Outcome::Duplicate);
        assert_eq!(r.redeem(&u('b'), 102.0), Outcome::Consumed);
        assert_eq!(r.uses, 1);
    }

    #[test]
    fn revoked_expired_and_permanent() {
        let mut r = mint(0.0, None, false, Some(1.0));
        assert_eq!(r.redeem(&u('a'), 86400.5), Outcome::Expired);
        assert_eq!(r.uses, 0);
        r.revoked = true;
        assert_eq!(r.redeem(&u('a'), 1.0), Outcome::Revoked);
        let mut p = mint(0.0, None, true, None);
        assert_eq!(p.redeem(&u('a'), 1e12), Outcome::Ok);
        assert_eq!(p.redeem(&u('b'), 1e12), Outcome::Ok);
        assert!(p.active(1e12));
        assert_eq!(p.uses, 2);
    }
}
