//! `properties` and `traits`: a JSON object given as a [`serde_json::Value`] or as any
//! [`Serialize`] value.
//!
//! A `Value` is kept as it is, as before: the encoder writes it where the message is encoded
//! (at the call, or on the client's encoder thread with deferred encoding). Any other type is
//! written to JSON text at once, by serde straight from the value, with no `Value` tree built
//! in between; the encoder then copies that text into the message. The text's length is exact,
//! so a typed object's share of the 32 KB limit is known without any estimate.
//!
//! Validation is the same for both: the object must be a JSON object (or null, for none).
//! A typed value that serializes to anything else is refused with the same
//! [`ValidationError::NotAnObject`] a `Value` gets; one that cannot be serialized at all (a map
//! with non-string keys, a `Serialize` impl that fails) with
//! [`ValidationError::Unserializable`].

use std::any::Any;

use serde::Serialize;
use serde_json::Value;

use crate::ValidationError;
use crate::json::json_type_name;

/// A message's `properties` or `traits`: a JSON object, or nothing.
///
/// Made from a [`Value`] (kept as a tree) or from any `Serialize + 'static` value (written to
/// JSON text once, with no tree): see [`Object::new`]. Encoding writes either form the same.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object(Repr);

#[derive(Debug, Clone, Default, PartialEq)]
enum Repr {
    /// None: the field is left out.
    #[default]
    Absent,
    /// A `Value`, as given (an object, or anything else for validation to refuse).
    Value(Value),
    /// JSON text written from a typed value: always a JSON object.
    Text(Box<str>),
    /// A typed value that serialized to something other than an object: its JSON type.
    NotAnObject(&'static str),
    /// A typed value that could not be serialized: why.
    Unserializable(String),
}

impl Object {
    /// `value` as a message's object. A [`Value`] is kept as it is (`Null` meaning none); any
    /// other type is serialized to JSON text now, straight from the value.
    ///
    /// `'static` because the `Value` case is told apart at run time, by type: pass owned
    /// values (a struct with `String` fields rather than `&str` ones), or serialize borrowed
    /// data yourself into a `Value`.
    pub fn new<T: Serialize + 'static>(value: T) -> Object {
        let mut slot = Some(value);
        if let Some(value) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Value>>() {
            return Object::from(value.take().unwrap_or(Value::Null));
        }
        match &slot {
            Some(value) => Object::typed(value),
            None => Object::default(),
        }
    }

    /// `value` serialized to JSON text now, whatever its type (a `Value` too).
    pub fn typed<T: Serialize + ?Sized>(value: &T) -> Object {
        let mut text = Vec::with_capacity(INITIAL_TEXT_CAPACITY);
        if let Err(error) = serde_json::to_writer(&mut text, value) {
            return Object(Repr::Unserializable(error.to_string()));
        }
        match text.first() {
            Some(b'{') => match String::from_utf8(text) {
                Ok(text) => Object(Repr::Text(text.into_boxed_str())),
                // serde_json writes UTF-8 only.
                Err(_) => Object(Repr::Unserializable("not UTF-8".into())),
            },
            Some(b'n') => Object(Repr::Absent),
            Some(b'[') => Object(Repr::NotAnObject("an array")),
            Some(b'"') => Object(Repr::NotAnObject("a string")),
            Some(b't' | b'f') => Object(Repr::NotAnObject("a boolean")),
            _ => Object(Repr::NotAnObject("a number")),
        }
    }

    /// True when there is nothing to write (no object, or a `null`).
    pub fn is_absent(&self) -> bool {
        matches!(self.0, Repr::Absent | Repr::Value(Value::Null))
    }

    /// The object as a `Value`, when it was given as one.
    pub fn as_value(&self) -> Option<&Value> {
        match &self.0 {
            Repr::Value(value) => Some(value),
            _ => None,
        }
    }

    /// The JSON text of an object given as a typed value.
    pub fn as_json_text(&self) -> Option<&str> {
        match &self.0 {
            Repr::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The object as a `Value`, built from its text if it was typed (for code that inspects
    /// messages; the client never does this). `Null` for none, or for a typed value that
    /// validation refuses.
    pub fn to_value(&self) -> Value {
        match &self.0 {
            Repr::Value(value) => value.clone(),
            Repr::Text(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Checks that this is a JSON object or nothing; `field` names it in the error.
    pub fn validate(&self, field: &'static str) -> Result<(), ValidationError> {
        match &self.0 {
            Repr::Absent | Repr::Text(_) | Repr::Value(Value::Null | Value::Object(_)) => Ok(()),
            Repr::Value(other) => Err(ValidationError::NotAnObject {
                field,
                found: json_type_name(other),
            }),
            Repr::NotAnObject(found) => Err(ValidationError::NotAnObject { field, found }),
            Repr::Unserializable(reason) => Err(ValidationError::Unserializable {
                field,
                reason: reason.clone(),
            }),
        }
    }

    /// What the encoder writes.
    pub(crate) fn form(&self) -> Form<'_> {
        match &self.0 {
            Repr::Value(Value::Null) | Repr::Absent => Form::Absent,
            Repr::Value(value) => Form::Value(value),
            Repr::Text(text) => Form::Text(text),
            // Refused by validation; written as nothing should anyone encode it unvalidated.
            Repr::NotAnObject(_) | Repr::Unserializable(_) => Form::Absent,
        }
    }
}

/// First allocation for a typed value's text: three or four short properties fit.
const INITIAL_TEXT_CAPACITY: usize = 128;

/// An [`Object`] as the encoder sees it.
pub(crate) enum Form<'a> {
    Absent,
    Value(&'a Value),
    Text(&'a str),
}

impl From<Value> for Object {
    fn from(value: Value) -> Object {
        Object(Repr::Value(value))
    }
}

impl PartialEq<Value> for Object {
    /// True when the object was given as this `Value`, or as a typed value whose JSON is it.
    fn eq(&self, other: &Value) -> bool {
        match &self.0 {
            Repr::Value(value) => value == other,
            Repr::Absent => other.is_null(),
            Repr::Text(_) => self.to_value() == *other,
            Repr::NotAnObject(_) | Repr::Unserializable(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[derive(Serialize)]
    struct Order {
        order_id: String,
        revenue: f64,
        coupon: Option<String>,
    }

    #[test]
    fn a_value_is_kept_and_a_typed_value_becomes_its_json_text() {
        let kept = Object::new(json!({"a": 1}));
        assert_eq!(kept.as_value(), Some(&json!({"a": 1})));
        let typed = Object::new(Order {
            order_id: "o-1".into(),
            revenue: 42.5,
            coupon: None,
        });
        assert_eq!(
            typed.as_json_text(),
            Some(r#"{"order_id":"o-1","revenue":42.5,"coupon":null}"#)
        );
        assert_eq!(
            typed,
            json!({"order_id": "o-1", "revenue": 42.5, "coupon": null})
        );
        assert!(Object::new(Value::Null).is_absent());
        assert!(Object::new(None::<Order>).is_absent());
        assert!(Object::new(()).is_absent());
    }

    #[test]
    fn typed_values_are_validated_as_values_are() {
        let not_object = |object: Object| match object.validate("properties") {
            Err(ValidationError::NotAnObject { field, found }) => (field, found),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            not_object(Object::new(vec![1, 2])),
            ("properties", "an array")
        );
        assert_eq!(
            not_object(Object::new(json!([1, 2]))),
            ("properties", "an array")
        );
        assert_eq!(not_object(Object::new("text")), ("properties", "a string"));
        assert_eq!(not_object(Object::new(7_u8)), ("properties", "a number"));
        assert_eq!(not_object(Object::new(true)), ("properties", "a boolean"));
        let mut bad_keys = BTreeMap::new();
        bad_keys.insert(vec![1_u8], 1);
        match Object::new(bad_keys).validate("traits") {
            Err(ValidationError::Unserializable { field, reason }) => {
                assert_eq!(field, "traits");
                assert!(reason.contains("key must be a string"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Object::new(BTreeMap::from([("k", 1)]))
                .validate("traits")
                .is_ok()
        );
    }
}
