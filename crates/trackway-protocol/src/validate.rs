//! The API's rules for a well-formed message, as typed errors that name the field.
//!
//! The client runs these before accepting a message and the collector runs the same function
//! on what it receives, so both sides agree on what "valid" means.

use serde_json::{Map, Value};

use crate::json::json_type_name;
use crate::limits::MESSAGE_ID_CHAR_LIMIT;
use crate::message::{Common, Kind, Message};

/// Why a message is not valid. Each variant names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Neither `userId` nor `anonymousId` is set (or both are empty).
    #[error("{kind} message needs a userId or an anonymousId")]
    MissingIdentity {
        /// The message type.
        kind: String,
    },
    /// A field the type requires is absent or empty.
    #[error("{kind} message needs a non-empty `{field}`")]
    MissingField {
        /// The message type.
        kind: String,
        /// The wire name of the missing field.
        field: &'static str,
    },
    /// A field that must be a JSON object is something else.
    #[error("`{field}` must be a JSON object, not {found}")]
    NotAnObject {
        /// The wire name of the field.
        field: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A typed `properties` or `traits` value could not be serialized to JSON (a map with
    /// keys that are not strings, or a `Serialize` impl that failed).
    #[error("`{field}` could not be serialized to JSON: {reason}")]
    Unserializable {
        /// The wire name of the field.
        field: &'static str,
        /// serde_json's error.
        reason: String,
    },
    /// A field that must be a string is something else.
    #[error("`{field}` must be a string, not {found}")]
    NotAString {
        /// The wire name of the field.
        field: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// `messageId` is empty or too long.
    #[error("messageId must be 1 to {} characters, not {chars}", MESSAGE_ID_CHAR_LIMIT - 1)]
    BadMessageId {
        /// Its length in characters.
        chars: usize,
    },
    /// The message has no `type`, or it is not a non-empty string.
    #[error("message needs a non-empty string `type`")]
    MissingType,
    /// A custom field uses a name the message already writes from its common fields.
    #[error("`{field}` cannot be a custom field: set it with its own method")]
    ReservedField {
        /// The wire name.
        field: &'static str,
    },
}

/// Checks `message` against the rules of its type.
pub fn validate(message: &Message) -> Result<(), ValidationError> {
    check(message).map(drop)
}

/// What [`check`] noticed about a valid message, for a client filling in its defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checked {
    /// A custom message that carries its own `timestamp` field: it is sent as given, so no
    /// timestamp should be added.
    pub has_timestamp_field: bool,
}

/// [`validate`], also saying what a client needs to know to fill in defaults, found in the
/// same pass over the message.
pub fn check(message: &Message) -> Result<Checked, ValidationError> {
    let common = message.common();
    check_common(common)?;
    let kind = message.kind();
    let mut checked = Checked::default();
    match message {
        Message::Identify(m) => {
            require_identity(&kind, common)?;
            m.traits.validate("traits")
        }
        Message::Track(m) => {
            require_identity(&kind, common)?;
            require_text(&kind, "event", Some(&m.event))?;
            m.properties.validate("properties")
        }
        Message::Page(m) => {
            require_identity(&kind, common)?;
            m.properties.validate("properties")
        }
        Message::Screen(m) => {
            require_identity(&kind, common)?;
            m.properties.validate("properties")
        }
        Message::Group(m) => {
            require_identity(&kind, common)?;
            require_text(&kind, "groupId", Some(&m.group_id))?;
            m.traits.validate("traits")
        }
        Message::Alias(m) => {
            require_text(&kind, "userId", common.user_id.as_deref())?;
            require_text(&kind, "previousId", Some(&m.previous_id))
        }
        Message::Custom(m) => {
            let members = Members::of(&m.fields);
            checked.has_timestamp_field = members.get("timestamp").is_some();
            check_custom_fields(&members, common)?;
            validate_fields(
                &kind,
                common.user_id.as_deref(),
                common.anonymous_id.as_deref(),
                |name| members.field(name),
            )
        }
    }?;
    Ok(checked)
}

/// Checks one message as it arrived on the wire, without converting it: the collector's path.
/// Returns its kind.
pub fn validate_json(message: &Map<String, Value>) -> Result<Kind, ValidationError> {
    let members = Members::of(message);
    let kind = match members.get("type") {
        Some(Value::String(kind)) if !kind.is_empty() => Kind::from_wire(kind),
        _ => return Err(ValidationError::MissingType),
    };
    let id = |name: &'static str| -> Result<Option<&str>, ValidationError> {
        match members.field(name) {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(ValidationError::NotAString {
                field: name,
                found: json_type_name(other),
            }),
        }
    };
    let user_id = id("userId")?;
    let anonymous_id = id("anonymousId")?;
    if let Some(message_id) = id("messageId")? {
        check_message_id(message_id)?;
    }
    optional_object("context", members.field("context"))?;
    optional_object("integrations", members.field("integrations"))?;
    validate_fields(&kind, user_id, anonymous_id, |name| members.field(name))?;
    Ok(kind)
}

/// The names of the members validation reads; the first six are also [`RESERVED_FIELDS`].
const READ: [&str; 12] = [
    "type",
    "messageId",
    "userId",
    "anonymousId",
    "context",
    "integrations",
    "timestamp",
    "event",
    "groupId",
    "previousId",
    "properties",
    "traits",
];

/// The members of a message object that validation reads ([`READ`]), found in one pass over
/// it. For objects of a few dozen members, comparing each name is several times cheaper than
/// a hashed lookup of each wanted name (serde_json's ordered map hashes with SipHash).
struct Members<'a> {
    found: [Option<&'a Value>; READ.len()],
}

impl<'a> Members<'a> {
    fn of(object: &'a Map<String, Value>) -> Members<'a> {
        let mut found = [None; READ.len()];
        for (name, value) in object {
            if let Some(i) = READ.iter().position(|read| read == name) {
                found[i] = Some(value);
            }
        }
        Members { found }
    }

    /// The member called `name` (one of [`READ`]), null if absent.
    fn field(&self, name: &str) -> &'a Value {
        self.get(name).unwrap_or(&Value::Null)
    }

    /// The member called `name` (one of [`READ`]), if present.
    fn get(&self, name: &str) -> Option<&'a Value> {
        let i = READ.iter().position(|read| *read == name)?;
        self.found[i]
    }
}

/// The rules of each type, over fields looked up by wire name.
fn validate_fields<'a>(
    kind: &Kind,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
    field: impl Fn(&'static str) -> &'a Value,
) -> Result<(), ValidationError> {
    let text = |name: &'static str| -> Result<(), ValidationError> {
        match field(name) {
            Value::Null => Err(missing(kind, name)),
            Value::String(s) => require_text(kind, name, Some(s)),
            other => Err(ValidationError::NotAString {
                field: name,
                found: json_type_name(other),
            }),
        }
    };
    match kind {
        Kind::Other(name) if name.is_empty() => Err(ValidationError::MissingType),
        Kind::Other(_) => Ok(()),
        Kind::Alias => {
            require_text(kind, "userId", user_id)?;
            text("previousId")
        }
        standard => {
            require_identity_ids(standard, user_id, anonymous_id)?;
            match standard {
                Kind::Track => text("event")?,
                Kind::Group => text("groupId")?,
                _ => {}
            }
            optional_object("properties", field("properties"))?;
            optional_object("traits", field("traits"))
        }
    }
}

/// Names a custom message writes from its common fields; a custom field of the same name
/// would put the key in the JSON twice. They are the first six names validation reads.
const RESERVED_FIELDS: &[&str] = READ.split_at(6).0;

fn check_custom_fields(members: &Members<'_>, common: &Common) -> Result<(), ValidationError> {
    // A member that is null is still written, so it counts as present.
    let present = |name: &str| members.get(name).is_some();
    if let Some(field) = RESERVED_FIELDS.iter().find(|name| present(name)) {
        return Err(ValidationError::ReservedField { field });
    }
    if common.timestamp.is_some() && present("timestamp") {
        return Err(ValidationError::ReservedField { field: "timestamp" });
    }
    Ok(())
}

fn check_message_id(id: &str) -> Result<(), ValidationError> {
    let chars = id.chars().count();
    if chars == 0 || chars >= MESSAGE_ID_CHAR_LIMIT {
        return Err(ValidationError::BadMessageId { chars });
    }
    Ok(())
}

fn check_common(common: &Common) -> Result<(), ValidationError> {
    if let Some(id) = &common.message_id {
        check_message_id(id)?;
    }
    if let Some(context) = &common.context {
        optional_object("context", context)?;
    }
    Ok(())
}

fn require_identity(kind: &Kind, common: &Common) -> Result<(), ValidationError> {
    require_identity_ids(
        kind,
        common.user_id.as_deref(),
        common.anonymous_id.as_deref(),
    )
}

fn require_identity_ids(
    kind: &Kind,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
) -> Result<(), ValidationError> {
    let present = |id: Option<&str>| id.is_some_and(|s| !s.is_empty());
    if present(user_id) || present(anonymous_id) {
        Ok(())
    } else {
        Err(ValidationError::MissingIdentity {
            kind: kind.to_string(),
        })
    }
}

fn require_text(
    kind: &Kind,
    field: &'static str,
    value: Option<&str>,
) -> Result<(), ValidationError> {
    match value {
        Some(text) if !text.is_empty() => Ok(()),
        _ => Err(missing(kind, field)),
    }
}

fn missing(kind: &Kind, field: &'static str) -> ValidationError {
    ValidationError::MissingField {
        kind: kind.to_string(),
        field,
    }
}

fn optional_object(field: &'static str, value: &Value) -> Result<(), ValidationError> {
    match value {
        Value::Null | Value::Object(_) => Ok(()),
        other => Err(ValidationError::NotAnObject {
            field,
            found: json_type_name(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(value: Value) -> Result<Kind, ValidationError> {
        validate_json(value.as_object().expect("an object"))
    }

    #[test]
    fn wire_messages_follow_each_types_rules() {
        assert_eq!(
            check(json!({"type": "track", "userId": "u", "event": "E"})),
            Ok(Kind::Track)
        );
        assert_eq!(
            check(json!({"type": "identify", "anonymousId": "a", "userId": null})),
            Ok(Kind::Identify)
        );
        assert_eq!(
            check(json!({"type": "alias", "userId": "u", "previousId": "p"})),
            Ok(Kind::Alias)
        );
        assert_eq!(
            check(json!({"type": "future", "x": 1})),
            Ok(Kind::Other("future".into())),
            "unknown types pass through"
        );
        let cases = [
            (json!({"userId": "u"}), ValidationError::MissingType),
            (
                json!({"type": "track", "userId": "u"}),
                missing(&Kind::Track, "event"),
            ),
            (
                json!({"type": "track", "event": "E"}),
                ValidationError::MissingIdentity {
                    kind: "track".into(),
                },
            ),
            (
                json!({"type": "group", "userId": "u"}),
                missing(&Kind::Group, "groupId"),
            ),
            (
                json!({"type": "alias", "previousId": "p"}),
                missing(&Kind::Alias, "userId"),
            ),
            (
                json!({"type": "alias", "userId": "u"}),
                missing(&Kind::Alias, "previousId"),
            ),
            (
                json!({"type": "track", "userId": 7, "event": "E"}),
                ValidationError::NotAString {
                    field: "userId",
                    found: "a number",
                },
            ),
            (
                json!({"type": "page", "userId": "u", "properties": "x"}),
                ValidationError::NotAnObject {
                    field: "properties",
                    found: "a string",
                },
            ),
            (
                json!({"type": "page", "userId": "u", "context": []}),
                ValidationError::NotAnObject {
                    field: "context",
                    found: "an array",
                },
            ),
            (
                json!({"type": "page", "userId": "u", "messageId": "m".repeat(100)}),
                ValidationError::BadMessageId { chars: 100 },
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(check(message.clone()), Err(expected), "{message}");
        }
    }

    #[test]
    fn custom_fields_cannot_shadow_common_ones() {
        let custom = crate::Custom::new("track")
            .user_id("u")
            .field("event", json!("E"));
        assert_eq!(validate(&custom.clone().into()), Ok(()));
        let shadowing = custom.clone().field("messageId", json!("m-1"));
        assert_eq!(
            validate(&shadowing.into()),
            Err(ValidationError::ReservedField { field: "messageId" })
        );
        let typed = custom.clone().field("type", json!("identify"));
        assert_eq!(
            validate(&typed.into()),
            Err(ValidationError::ReservedField { field: "type" })
        );
        let stamped = custom
            .timestamp(std::time::SystemTime::UNIX_EPOCH)
            .field("timestamp", json!("x"));
        assert_eq!(
            validate(&stamped.into()),
            Err(ValidationError::ReservedField { field: "timestamp" })
        );
    }

    #[test]
    fn check_notes_a_custom_timestamp_field() {
        let plain = crate::Custom::new("step").user_id("u");
        assert_eq!(
            super::check(&plain.clone().into()).map(|c| c.has_timestamp_field),
            Ok(false)
        );
        let stamped = plain.field("timestamp", json!("2020-01-01T00:00:00Z"));
        assert_eq!(
            super::check(&stamped.into()).map(|c| c.has_timestamp_field),
            Ok(true)
        );
        let track: Message = crate::Track::new("E").user_id("u").into();
        assert_eq!(
            super::check(&track).map(|c| c.has_timestamp_field),
            Ok(false)
        );
    }

    #[test]
    fn typed_and_wire_validation_agree() {
        let message = Message::from_json(json!({"type": "group", "userId": "u"})).expect("parses");
        assert_eq!(validate(&message), Err(missing(&Kind::Group, "groupId")));
        let message =
            Message::from_json(json!({"type": "track", "anonymousId": "a", "event": "E"}))
                .expect("parses");
        assert_eq!(validate(&message), Ok(()));
    }
}
