//! The request envelope and every tool's arguments and results.
//!
//! A request is `{"tool": name, "args": {<business args>, "auth": {...}}}`.
//! Parsing is strict about shape (exact key sets, types) and lenient about
//! nothing that Python clients actually send differently.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::{Auth, AuthError, Dialect};
use crate::canonical::map_hash;

/// Every tool the relay serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    PublishKeys,
    CountKeys,
    GetKeys,
    ClaimKey,
    SendMessage,
    ReadMessages,
    Nack,
}

impl Tool {
    pub const ALL: [Tool; 7] = [
        Tool::PublishKeys,
        Tool::CountKeys,
        Tool::GetKeys,
        Tool::ClaimKey,
        Tool::SendMessage,
        Tool::ReadMessages,
        Tool::Nack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::PublishKeys => "publish_keys",
            Tool::CountKeys => "count_keys",
            Tool::GetKeys => "get_keys",
            Tool::ClaimKey => "claim_key",
            Tool::SendMessage => "send_message",
            Tool::ReadMessages => "read_messages",
            Tool::Nack => "nack",
        }
    }

    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// (required, optional) business argument names.
    fn arg_names(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Tool::PublishKeys => (
                &[
                    "identity_key",
                    "signing_key",
                    "one_time_keys",
                    "fallback_key",
                ],
                &[],
            ),
            Tool::CountKeys => (&[], &[]),
            Tool::GetKeys | Tool::ClaimKey => (&["peer"], &[]),
            Tool::SendMessage => (&["to", "mtype", "body"], &[]),
            Tool::ReadMessages => (&[], &["peer", "peek", "wait"]),
            Tool::Nack => (&["hash", "sig"], &[]),
        }
    }
}

/// Why a request body is not a well-formed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("bad request: body is not JSON ({0})")]
    NotJson(String),
    #[error("bad request: body must be a JSON object")]
    NotAnObject,
    #[error("bad request: missing 'tool'")]
    MissingTool,
    #[error("unknown tool: {0:?}")]
    UnknownTool(String),
    #[error("bad request: 'args' must be an object")]
    ArgsNotAnObject,
    #[error("{tool}() got an unexpected keyword argument '{arg}'")]
    UnexpectedArg { tool: &'static str, arg: String },
    #[error("{tool}() missing required argument: '{arg}'")]
    MissingArg {
        tool: &'static str,
        arg: &'static str,
    },
    #[error("{tool}(): '{arg}' {problem}")]
    BadArg {
        tool: &'static str,
        arg: &'static str,
        problem: &'static str,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// A parsed, not yet verified request.
#[derive(Debug, Clone)]
pub struct Request {
    pub tool: Tool,
    pub args: Args,
    pub auth: Auth,
    pub dialect: Dialect,
    /// sha256 of the canonical business args, as the caller must have signed.
    pub args_hash: String,
}

/// Typed business arguments. Strings that should be ids stay strings here:
/// an id that is not valid is answered as "unknown", like Python does.
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    PublishKeys {
        identity_key: String,
        signing_key: String,
        one_time_keys: Vec<(String, String)>,
        fallback_key: Option<(String, String)>,
    },
    CountKeys,
    GetKeys {
        peer: String,
    },
    ClaimKey {
        peer: String,
    },
    SendMessage {
        to: String,
        mtype: i64,
        body: String,
    },
    ReadMessages {
        peer: Option<String>,
        peek: bool,
        /// Our extension (long-poll): hold the read until mail arrives or
        /// this runs out. Python relays refuse the argument.
        wait: Option<Wait>,
    },
    Nack {
        hash: String,
        sig: String,
    },
}

/// How long a `read_messages` may be held for mail to arrive: a finite
/// number of seconds greater than 0, so a zero, negative or non-finite
/// wait cannot be built (the relay refuses those on the wire).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Wait(f64);

impl Wait {
    /// `None` unless `seconds` is finite and above 0.
    pub fn new(seconds: f64) -> Option<Wait> {
        (seconds.is_finite() && seconds > 0.0).then_some(Wait(seconds))
    }

    pub fn seconds(self) -> f64 {
        self.0
    }

    /// At most `max` seconds (`None` when `max` is not a valid wait).
    pub fn at_most(self, max: f64) -> Option<Wait> {
        Wait::new(self.0.min(max))
    }

    /// As sent: whole seconds as a JSON integer (no float formatting for
    /// the signature to depend on), anything else as a float.
    fn to_value(self) -> Value {
        if self.0.fract() == 0.0 && self.0 <= 9_007_199_254_740_992.0 {
            Value::from(self.0 as u64)
        } else {
            Value::from(self.0)
        }
    }
}

/// Keeps of a request's business `args` what its signature covers, which
/// is also what the relay acts on: read_messages signs `peer` and `peek`
/// only when truthy (the Python relay rebuilds its signed dict that way);
/// every other tool signs exactly what was sent.
pub fn keep_signed(tool: &str, args: &mut Map<String, Value>) {
    if tool == Tool::ReadMessages.name() {
        args.retain(|_, v| truthy(v));
    }
}

/// Whether a value is truthy in Python's sense.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        // A number too large for f64 (Python: a big int or inf) is not 0.
        Value::Number(n) => n.as_f64().is_none_or(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl Request {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Request, RequestError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
        Request::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Request, RequestError> {
        let Value::Object(mut req) = value else {
            return Err(RequestError::NotAnObject);
        };
        let tool = match req.get("tool") {
            None => return Err(RequestError::MissingTool),
            Some(Value::String(name)) => Tool::from_name(name)
                .ok_or_else(|| RequestError::UnknownTool(name.chars().take(64).collect()))?,
            Some(other) => {
                return Err(RequestError::UnknownTool(
                    other.to_string().chars().take(64).collect(),
                ))
            }
        };
        let mut args = match req.remove("args") {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(RequestError::ArgsNotAnObject),
        };
        let auth_value = args.remove("auth");
        let (required, optional) = tool.arg_names();
        if let Some(extra) = args
            .keys()
            .find(|k| !required.contains(&k.as_str()) && !optional.contains(&k.as_str()))
        {
            return Err(RequestError::UnexpectedArg {
                tool: tool.name(),
                arg: extra.chars().take(64).collect(),
            });
        }
        if let Some(missing) = required.iter().find(|k| !args.contains_key(**k)) {
            return Err(RequestError::MissingArg {
                tool: tool.name(),
                arg: missing,
            });
        }
        let (auth, dialect) = Auth::from_json(auth_value.as_ref())?;
        keep_signed(tool.name(), &mut args);
        let args_hash = map_hash(&args);
        let args = Args::from_map(tool, args)?;
        Ok(Request {
            tool,
            args,
            auth,
            dialect,
            args_hash,
        })
    }
}

fn string(
    tool: Tool,
    map: &mut Map<String, Value>,
    name: &'static str,
) -> Result<String, RequestError> {
    match map.remove(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(RequestError::BadArg {
            tool: tool.name(),
            arg: name,
            problem: "must be a string",
        }),
    }
}

fn string_pairs(
    tool: Tool,
    value: Value,
    name: &'static str,
) -> Result<Vec<(String, String)>, RequestError> {
    let bad = RequestError::BadArg {
        tool: tool.name(),
        arg: name,
        problem: "must be an object of key id to key strings",
    };
    let Value::Object(m) = value else {
        return Err(bad);
    };
    m.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(bad.clone()),
        })
        .collect()
}

impl Args {
    fn from_map(tool: Tool, mut m: Map<String, Value>) -> Result<Args, RequestError> {
        Ok(match tool {
            Tool::PublishKeys => {
                let identity_key = string(tool, &mut m, "identity_key")?;
                let signing_key = string(tool, &mut m, "signing_key")?;
                let one_time_keys = string_pairs(
                    tool,
                    m.remove("one_time_keys").unwrap_or(Value::Null),
                    "one_time_keys",
                )?;
                let fallback_key = match m.remove("fallback_key") {
                    None | Some(Value::Null) => None,
                    Some(v) => string_pairs(tool, v, "fallback_key")?.into_iter().next(),
                };
                Args::PublishKeys {
                    identity_key,
                    signing_key,
                    one_time_keys,
                    fallback_key,
                }
            }
            Tool::CountKeys => Args::CountKeys,
            Tool::GetKeys => Args::GetKeys {
                peer: string(tool, &mut m, "peer")?,
            },
            Tool::ClaimKey => Args::ClaimKey {
                peer: string(tool, &mut m, "peer")?,
            },
            Tool::SendMessage => {
                let to = string(tool, &mut m, "to")?;
                let mtype = match m.remove("mtype") {
                    Some(Value::Number(n)) if n.as_i64().is_some_and(|t| t == 0 || t == 1) => {
                        n.as_i64().unwrap_or(0)
                    }
                    _ => {
                        return Err(RequestError::BadArg {
                            tool: tool.name(),
                            arg: "mtype",
                            problem: "must be 0 (pre-key) or 1 (normal)",
                        })
                    }
                };
                let body = string(tool, &mut m, "body")?;
                Args::SendMessage { to, mtype, body }
            }
            Tool::ReadMessages => {
                let peer = match m.remove("peer") {
                    None => None,
                    Some(Value::String(s)) => Some(s),
                    Some(_) => {
                        return Err(RequestError::BadArg {
                            tool: tool.name(),
                            arg: "peer",
                            problem: "must be a string",
                        })
                    }
                };
                let peek = m.remove("peek").is_some();
                // Falsy values were dropped with the other options (a
                // `wait` of 0 is no wait); what is left must be a number.
                let wait = match m.remove("wait") {
                    None => None,
                    Some(v) => Some(
                        v.as_f64()
                            .filter(|_| v.is_number())
                            .and_then(Wait::new)
                            .ok_or(RequestError::BadArg {
                                tool: tool.name(),
                                arg: "wait",
                                problem: "must be a positive number of seconds",
                            })?,
                    ),
                };
                Args::ReadMessages { peer, peek, wait }
            }
            Tool::Nack => {
                let hash = string(tool, &mut m, "hash")?;
                let sig = string(tool, &mut m, "sig")?;
                Args::Nack { hash, sig }
            }
        })
    }

    /// The business args as sent on the wire (what the client signs).
    pub fn to_value(&self) -> Value {
        let pairs = |v: &[(String, String)]| {
            Value::Object(
                v.iter()
                    .map(|(k, s)| (k.clone(), Value::String(s.clone())))
                    .collect(),
            )
        };
        let mut m = Map::new();
        match self {
            Args::PublishKeys {
                identity_key,
                signing_key,
                one_time_keys,
                fallback_key,
            } => {
                m.insert("identity_key".into(), identity_key.clone().into());
                m.insert("signing_key".into(), signing_key.clone().into());
                m.insert("one_time_keys".into(), pairs(one_time_keys));
                m.insert(
                    "fallback_key".into(),
                    fallback_key
                        .as_ref()
                        .map_or(Value::Null, |f| pairs(std::slice::from_ref(f))),
                );
            }
            Args::CountKeys => {}
            Args::GetKeys { peer } | Args::ClaimKey { peer } => {
                m.insert("peer".into(), peer.clone().into());
            }
            Args::SendMessage { to, mtype, body } => {
                m.insert("to".into(), to.clone().into());
                m.insert("mtype".into(), (*mtype).into());
                m.insert("body".into(), body.clone().into());
            }
            Args::ReadMessages { peer, peek, wait } => {
                if let Some(p) = peer.as_ref().filter(|p| !p.is_empty()) {
                    m.insert("peer".into(), p.clone().into());
                }
                if *peek {
                    m.insert("peek".into(), true.into());
                }
                if let Some(w) = wait {
                    m.insert("wait".into(), w.to_value());
                }
            }
            Args::Nack { hash, sig } => {
                m.insert("hash".into(), hash.clone().into());
                m.insert("sig".into(), sig.clone().into());
            }
        }
        Value::Object(m)
    }

    pub fn tool(&self) -> Tool {
        match self {
            Args::PublishKeys { .. } => Tool::PublishKeys,
            Args::CountKeys => Tool::CountKeys,
            Args::GetKeys { .. } => Tool::GetKeys,
            Args::ClaimKey { .. } => Tool::ClaimKey,
            Args::SendMessage { .. } => Tool::SendMessage,
            Args::ReadMessages { .. } => Tool::ReadMessages,
            Args::Nack { .. } => Tool::Nack,
        }
    }
}

/// A signed request ready for a transport: business args plus auth, which
/// the transport writes in the dialect its relay speaks.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub tool: Tool,
    pub args: Value,
    pub auth: Auth,
}

impl SignedRequest {
    /// `args` signed by `account` for the relay at `audience`, at `now`:
    /// what the client sends, and what tests and benches forge by hand.
    pub fn sign(account: &vodozemac::olm::Account, args: &Args, audience: &str, now: f64) -> Self {
        let value = args.to_value();
        let auth = Auth::sign(
            account,
            args.tool().name(),
            audience,
            &crate::canonical::args_hash(&value),
            now,
        );
        SignedRequest {
            tool: args.tool(),
            args: value,
            auth,
        }
    }

    /// The request body in one dialect.
    pub fn to_body(&self, dialect: Dialect) -> Vec<u8> {
        let mut args = match &self.args {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        args.insert("auth".into(), self.auth.to_json(dialect));
        let mut body = Map::new();
        body.insert("tool".into(), self.tool.name().into());
        body.insert("args".into(), Value::Object(args));
        serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
    }
}

// ---------- results ----------

/// `count_keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCounts {
    pub unclaimed: u64,
    pub has_fallback: bool,
}

/// `get_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeys {
    pub identity_key: String,
    pub signing_key: String,
}

/// `claim_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKey {
    pub identity_key: String,
    pub signing_key: String,
    pub key_id: String,
    pub one_time_key: String,
    pub fallback: bool,
}

/// `send_message`: stored, or refused by the recipient's signed nack (0.3.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SendResult {
    Refused {
        refused: bool,
        hash: String,
        sig: String,
    },
    Stored {
        message_id: i64,
        ts: f64,
    },
}

/// One message of a `read_messages` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailItem {
    pub message_id: i64,
    pub ts: f64,
    pub from: String,
    pub mtype: i64,
    pub body: String,
}

/// The text a 0.3.0 nack signs.
pub fn nack_text(recipient: &str, hash: &str) -> String {
    format!("nack|{recipient}|{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Value {
        serde_json::json!({"user_id": "u", "identity_key": "i", "signing_key": "s", "ts": "1", "nonce": "n", "sig": "x"})
    }

    #[test]
    fn exact_key_sets() {
        let body = serde_json::json!({"tool": "get_keys", "args": {"auth": auth()}});
        assert_eq!(
            Request::from_value(body).unwrap_err().to_string(),
            "get_keys() missing required argument: 'peer'"
        );
        let body = serde_json::json!({"tool": "count_keys", "args": {"x": 1, "auth": auth()}});
        assert_eq!(
            Request::from_value(body).unwrap_err().to_string(),
            "count_keys() got an unexpected keyword argument 'x'"
        );
        let body = serde_json::json!({"tool": "nope", "args": {}});
        assert_eq!(
            Request::from_value(body).unwrap_err().to_string(),
            "unknown tool: \"nope\""
        );
    }

    #[test]
    fn read_messages_signs_only_truthy_options() {
        let a = Request::from_value(serde_json::json!({"tool": "read_messages", "args": {"peer": "", "peek": false, "auth": auth()}})).unwrap();
        let b = Request::from_value(
            serde_json::json!({"tool": "read_messages", "args": {"auth": auth()}}),
        )
        .unwrap();
        assert_eq!(a.args_hash, b.args_hash);
        assert_eq!(
            a.args,
            Args::ReadMessages {
                peer: Some(String::new()).filter(|_| false),
                peek: false,
                wait: None,
            }
        );
    }

    #[test]
    fn wait_is_a_positive_number_or_refused() {
        let read = |wait: Value| {
            Request::from_value(
                serde_json::json!({"tool": "read_messages", "args": {"wait": wait, "auth": auth()}}),
            )
        };
        for ok in [
            serde_json::json!(25),
            serde_json::json!(0.5),
            serde_json::json!(1e300),
        ] {
            let Args::ReadMessages { wait, .. } = read(ok.clone()).unwrap().args else {
                panic!("not a read");
            };
            assert_eq!(wait.map(Wait::seconds), ok.as_f64());
        }
        // Falsy: no wait, as for `peer` and `peek`.
        for absent in [
            serde_json::json!(0),
            serde_json::json!(false),
            Value::Null,
            serde_json::json!([]),
        ] {
            let Args::ReadMessages { wait, .. } = read(absent).unwrap().args else {
                panic!("not a read");
            };
            assert_eq!(wait, None);
        }
        for bad in [
            serde_json::json!(-1),
            serde_json::json!("10"),
            serde_json::json!([5]),
            serde_json::json!({"s": 5}),
            serde_json::json!(true),
            serde_json::from_str::<Value>("1e999").unwrap(),
        ] {
            assert_eq!(
                read(bad.clone()).unwrap_err().to_string(),
                "read_messages(): 'wait' must be a positive number of seconds",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_whole_wait_is_sent_as_an_integer() {
        let args = Args::ReadMessages {
            peer: None,
            peek: false,
            wait: Wait::new(25.0),
        };
        assert_eq!(args.to_value(), serde_json::json!({"wait": 25}));
        assert_eq!(Wait::new(0.0), None);
        assert_eq!(Wait::new(f64::NAN), None);
    }

    #[test]
    fn args_round_trip_to_the_signed_value() {
        let args = Args::SendMessage {
            to: "t".into(),
            mtype: 1,
            body: "b".into(),
        };
        let mut v = args.to_value();
        v.as_object_mut().unwrap().insert("auth".into(), auth());
        let req =
            Request::from_value(serde_json::json!({"tool": "send_message", "args": v})).unwrap();
        assert_eq!(req.args, args);
        assert_eq!(req.args_hash, crate::canonical::args_hash(&args.to_value()));
    }
}
