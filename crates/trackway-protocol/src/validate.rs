//! The API's rules for a well-formed message, as typed errors that name the field.
//!
//! The client runs these before accepting a message and the collector runs the same function
//! on what it receives, so both sides agree on what "valid" means.

use serde_json::Value;

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
}

/// Checks `message` against the rules of its type.
pub fn validate(message: &Message) -> Result<(), ValidationError> {
    let common = message.common();
    check_common(common)?;
    let kind = message.kind();
    match message {
        Message::Identify(m) => {
            require_identity(&kind, common)?;
            optional_object("traits", &m.traits)
        }
        Message::Track(m) => {
            require_identity(&kind, common)?;
            require_text(&kind, "event", Some(&m.event))?;
            optional_object("properties", &m.properties)
        }
        Message::Page(m) => {
            require_identity(&kind, common)?;
            optional_object("properties", &m.properties)
        }
        Message::Screen(m) => {
            require_identity(&kind, common)?;
            optional_object("properties", &m.properties)
        }
        Message::Group(m) => {
            require_identity(&kind, common)?;
            require_text(&kind, "groupId", Some(&m.group_id))?;
            optional_object("traits", &m.traits)
        }
        Message::Alias(m) => {
            require_text(&kind, "userId", common.user_id.as_deref())?;
            require_text(&kind, "previousId", Some(&m.previous_id))
        }
        Message::Custom(m) => {
            let field = |name: &'static str| m.fields.get(name).unwrap_or(&Value::Null);
            let text = |name: &'static str| -> Result<(), ValidationError> {
                match field(name) {
                    Value::Null => Err(missing(&kind, name)),
                    Value::String(s) => require_text(&kind, name, Some(s)),
                    other => Err(ValidationError::NotAString {
                        field: name,
                        found: json_type_name(other),
                    }),
                }
            };
            match &kind {
                Kind::Other(name) if name.is_empty() => Err(ValidationError::MissingType),
                Kind::Other(_) => Ok(()),
                Kind::Alias => {
                    require_text(&kind, "userId", common.user_id.as_deref())?;
                    text("previousId")
                }
                standard => {
                    require_identity(standard, common)?;
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
    }
}

fn check_common(common: &Common) -> Result<(), ValidationError> {
    if let Some(id) = &common.message_id {
        let chars = id.chars().count();
        if chars == 0 || chars >= MESSAGE_ID_CHAR_LIMIT {
            return Err(ValidationError::BadMessageId { chars });
        }
    }
    if let Some(context) = &common.context {
        optional_object("context", context)?;
    }
    Ok(())
}

fn require_identity(kind: &Kind, common: &Common) -> Result<(), ValidationError> {
    let present = |id: &Option<String>| id.as_deref().is_some_and(|s| !s.is_empty());
    if present(&common.user_id) || present(&common.anonymous_id) {
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

/// The JSON type of `value`, for error messages.
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
