//! Envelopes: the JSON inside the Olm ciphertext.
//!
//! Receivers parse JSON and never fail on a kind or field they do not know
//! (0.3.0 adds `contact`, `group_leave`, `contact_request` and group fields).

use serde_json::{Map, Value};

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// A chat message. `name` is the sender's self-chosen, unverified name.
    /// A group copy (0.3.0) adds `group` (`{"id","name","members"}`, see
    /// [`crate::group::GroupTag`]) and `mid`, the thread id shared by every
    /// member's copy (each copy has its own `id`).
    Msg {
        id: String,
        text: String,
        name: String,
        group: Option<Value>,
        mid: Option<String>,
    },
    /// Acknowledges the envelope `id`.
    Ack { id: String },
    /// A contact card shared with `retalk share` (0.3.0, `user.py`
    /// `share`): `card` is the Contact object (`fingerprint`, `name`,
    /// `identity_key`, `signing_key`, `verified`), `name` the sender's
    /// self-chosen name. The card is kept as JSON text, so the key order
    /// a receiver prints it in (Python's `json.dumps` of the parsed card)
    /// is the sender's.
    Contact {
        id: String,
        name: String,
        card: String,
    },
    /// The sender left the group `group_id` (0.3.0, `user.py` `leave_group`);
    /// `name` is the sender's label for it.
    GroupLeave {
        id: String,
        group_id: String,
        name: String,
    },
    /// A redemption of one of our invite codes (0.3.0, `user.py`
    /// `request_contact`): `card` is the requester's own card as JSON text
    /// (no `name` field on the envelope).
    ContactRequest {
        id: String,
        code: String,
        card: String,
    },
    /// A kind this client does not handle; acked so the sender stops
    /// resending, never surfaced as chat.
    Other { id: Option<String>, kind: String },
}

/// Why a plaintext is not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("plaintext is not UTF-8 JSON")]
    NotJson,
    #[error("envelope is not a JSON object")]
    NotAnObject,
    #[error("envelope has no string 'id'")]
    MissingId,
    #[error("envelope has no string 'kind'")]
    MissingKind,
    #[error("msg envelope has no string 'text'")]
    MissingText,
}

fn str_field(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_owned)
}

impl Envelope {
    pub fn msg(id: String, text: &str, name: &str) -> Envelope {
        Envelope::Msg {
            id,
            text: text.to_owned(),
            name: name.to_owned(),
            group: None,
            mid: None,
        }
    }

    /// The envelope id (what an ack names).
    pub fn id(&self) -> Option<&str> {
        match self {
            Envelope::Msg { id, .. }
            | Envelope::Ack { id }
            | Envelope::Contact { id, .. }
            | Envelope::GroupLeave { id, .. }
            | Envelope::ContactRequest { id, .. } => Some(id),
            Envelope::Other { id, .. } => id.as_deref(),
        }
    }

    pub fn decode(plaintext: &[u8]) -> Result<Envelope, EnvelopeError> {
        let v: Value = serde_json::from_slice(plaintext).map_err(|_| EnvelopeError::NotJson)?;
        let Value::Object(m) = v else {
            return Err(EnvelopeError::NotAnObject);
        };
        let kind = str_field(&m, "kind").ok_or(EnvelopeError::MissingKind)?;
        let id = str_field(&m, "id");
        match kind.as_str() {
            "msg" => Ok(Envelope::Msg {
                id: id.ok_or(EnvelopeError::MissingId)?,
                text: str_field(&m, "text").ok_or(EnvelopeError::MissingText)?,
                name: str_field(&m, "name").unwrap_or_default(),
                group: m.get("group").filter(|g| g.is_object()).cloned(),
                mid: str_field(&m, "mid"),
            }),
            "ack" => Ok(Envelope::Ack {
                id: id.ok_or(EnvelopeError::MissingId)?,
            }),
            "contact" => Ok(Envelope::Contact {
                id: id.ok_or(EnvelopeError::MissingId)?,
                name: str_field(&m, "name").unwrap_or_default(),
                card: m.get("card").map(Value::to_string).unwrap_or_default(),
            }),
            "group_leave" => Ok(Envelope::GroupLeave {
                id: id.ok_or(EnvelopeError::MissingId)?,
                group_id: str_field(&m, "group_id").unwrap_or_default(),
                name: str_field(&m, "name").unwrap_or_default(),
            }),
            "contact_request" => Ok(Envelope::ContactRequest {
                id: id.ok_or(EnvelopeError::MissingId)?,
                code: str_field(&m, "code").unwrap_or_default(),
                card: m.get("card").map(Value::to_string).unwrap_or_default(),
            }),
            _ => Ok(Envelope::Other { id, kind }),
        }
    }

    /// JSON text as Python writes it (`json.dumps` defaults); receivers only
    /// parse it, so the byte form is a courtesy, not a contract.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Map::new();
        match self {
            Envelope::Msg {
                id,
                text,
                name,
                group,
                mid,
            } => {
                m.insert("id".into(), id.clone().into());
                m.insert("kind".into(), "msg".into());
                m.insert("text".into(), text.clone().into());
                m.insert("name".into(), name.clone().into());
                if let Some(g) = group {
                    m.insert("group".into(), g.clone());
                }
                if let Some(mid) = mid {
                    m.insert("mid".into(), mid.clone().into());
                }
            }
            Envelope::GroupLeave { id, group_id, name } => {
                m.insert("id".into(), id.clone().into());
                m.insert("kind".into(), "group_leave".into());
                m.insert("group_id".into(), group_id.clone().into());
                m.insert("name".into(), name.clone().into());
            }
            Envelope::ContactRequest { id, code, card } => {
                let mut out = String::from("{\"id\": ");
                out.push_str(&Value::from(id.as_str()).to_string());
                out.push_str(", \"kind\": \"contact_request\", \"code\": ");
                out.push_str(&Value::from(code.as_str()).to_string());
                out.push_str(", \"card\": ");
                out.push_str(if card.is_empty() { "{}" } else { card });
                out.push('}');
                return out.into_bytes();
            }
            Envelope::Ack { id } => {
                m.insert("id".into(), id.clone().into());
                m.insert("kind".into(), "ack".into());
            }
            Envelope::Contact { id, name, card } => {
                // By hand: a JSON map would sort the card's keys.
                let mut out = String::from("{\"id\": ");
                out.push_str(&Value::from(id.as_str()).to_string());
                out.push_str(", \"kind\": \"contact\", \"name\": ");
                out.push_str(&Value::from(name.as_str()).to_string());
                out.push_str(", \"card\": ");
                out.push_str(if card.is_empty() { "{}" } else { card });
                out.push('}');
                return out.into_bytes();
            }
            Envelope::Other { id, kind } => {
                if let Some(id) = id {
                    m.insert("id".into(), id.clone().into());
                }
                m.insert("kind".into(), kind.clone().into());
            }
        }
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }
}

/// The name a receiver shows for a sender: its own saved name wins, else
/// the sender's self-chosen name marked `~` as unverified, else nothing.
pub fn display_name(saved: Option<&str>, claimed: &str) -> String {
    match saved {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ if !claimed.is_empty() => format!("~{claimed}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_and_fields_do_not_fail() {
        let e = Envelope::decode(br#"{"id":"x","kind":"group_ping","group_id":"g"}"#).unwrap();
        assert_eq!(
            e,
            Envelope::Other {
                id: Some("x".into()),
                kind: "group_ping".into()
            }
        );
        let e = Envelope::decode(br#"{"id":"x","kind":"msg","text":"t","name":"n","extra":[1]}"#)
            .unwrap();
        assert_eq!(e, Envelope::msg("x".into(), "t", "n"));
        assert_eq!(Envelope::decode(b"[1]"), Err(EnvelopeError::NotAnObject));
        assert_eq!(Envelope::decode(b"\xff"), Err(EnvelopeError::NotJson));
        assert_eq!(
            Envelope::decode(br#"{"kind":"msg","text":"t"}"#),
            Err(EnvelopeError::MissingId)
        );
    }

    #[test]
    fn round_trip() {
        let e = Envelope::msg("id".into(), "h\u{e9}llo \u{2603}", "alice");
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let a = Envelope::Ack { id: "id".into() };
        assert_eq!(Envelope::decode(&a.encode()).unwrap(), a);
        let c = Envelope::Contact {
            id: "id".into(),
            name: "alice".into(),
            card: r#"{"fingerprint":"f","name":"bob"}"#.into(),
        };
        assert_eq!(Envelope::decode(&c.encode()).unwrap(), c);
        let g = Envelope::Msg {
            id: "id".into(),
            text: "t".into(),
            name: "n".into(),
            group: Some(serde_json::json!({"id": "g", "name": "team", "members": []})),
            mid: Some("m".into()),
        };
        assert_eq!(Envelope::decode(&g.encode()).unwrap(), g);
        let l = Envelope::GroupLeave {
            id: "id".into(),
            group_id: "g".into(),
            name: "team".into(),
        };
        assert_eq!(Envelope::decode(&l.encode()).unwrap(), l);
        let r = Envelope::ContactRequest {
            id: "id".into(),
            code: "c0de".into(),
            card: r#"{"fingerprint":"f","name":"bob"}"#.into(),
        };
        assert_eq!(Envelope::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn names() {
        assert_eq!(display_name(Some("bob"), "evil"), "bob");
        assert_eq!(display_name(None, "alice"), "~alice");
        assert_eq!(display_name(None, ""), "");
    }
}
