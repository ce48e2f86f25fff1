//! The six message types of the Tracking API, plus [`Custom`] for any other `type`.
//!
//! Every type carries [`Common`] fields (ids, context, integrations, timestamp, message id) and
//! its own. Builder methods set each one; the common ones are generated for every type by
//! `common_options!` so that `Track::new("Signed Up").user_id("u1").integration("Mixpanel", false)`
//! reads the same on every type.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::object::Object;

use crate::json::json_type_name;

/// The `type` of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// `identify`: who the user is.
    Identify,
    /// `track`: what the user did.
    Track,
    /// `page`: a web page view.
    Page,
    /// `screen`: a mobile screen view.
    Screen,
    /// `group`: the account or organisation a user belongs to.
    Group,
    /// `alias`: merges two user identities.
    Alias,
    /// Any other `type`, passed through untouched.
    Other(String),
}

impl Kind {
    /// The wire names of the six types the Tracking API documents.
    pub const STANDARD: [&'static str; 6] =
        ["identify", "track", "page", "screen", "group", "alias"];

    /// The name of one of the six kinds; `""` for [`Kind::Other`].
    fn as_str_static(&self) -> &'static str {
        match self {
            Kind::Identify => "identify",
            Kind::Track => "track",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Group => "group",
            Kind::Alias => "alias",
            Kind::Other(_) => "",
        }
    }

    /// The wire name of this type.
    pub fn as_str(&self) -> &str {
        match self {
            Kind::Other(name) => name,
            known => known.as_str_static(),
        }
    }

    /// The kind named `name` on the wire; names outside the six are [`Kind::Other`].
    pub fn from_wire(name: &str) -> Kind {
        match name {
            "identify" => Kind::Identify,
            "track" => Kind::Track,
            "page" => Kind::Page,
            "screen" => Kind::Screen,
            "group" => Kind::Group,
            "alias" => Kind::Alias,
            other => Kind::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields every message type carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Common {
    /// `userId`: your stable id for the user.
    pub user_id: Option<String>,
    /// `anonymousId`: an id for a user you cannot name yet.
    pub anonymous_id: Option<String>,
    /// `context`: facts about the circumstances (ip, locale, library, ...); a JSON object.
    pub context: Option<Value>,
    /// `integrations`: destination name to `true`/`false` or an options object.
    pub integrations: Option<Map<String, Value>>,
    /// `timestamp`: when it happened; the client fills in the time of the call when absent.
    pub timestamp: Option<SystemTime>,
    /// `messageId`: unique id used for deduplication; the client fills in a UUID when absent.
    pub message_id: Option<String>,
}

/// Generates the builder methods for the [`Common`] fields on each message type.
macro_rules! common_options {
    ($($ty:ident),+) => {$(
        impl $ty {
            /// Sets `userId`.
            pub fn user_id(mut self, id: impl Into<String>) -> Self {
                self.common.user_id = Some(id.into());
                self
            }

            /// Sets `anonymousId`.
            pub fn anonymous_id(mut self, id: impl Into<String>) -> Self {
                self.common.anonymous_id = Some(id.into());
                self
            }

            /// Sets `context`, which must be a JSON object. The client adds
            /// `context.library` and its default context to it; keys set here win.
            pub fn context(mut self, context: Value) -> Self {
                self.common.context = Some(context);
                self
            }

            /// Turns one destination on or off (`"integrations": {name: enabled}`).
            pub fn integration(mut self, name: impl Into<String>, enabled: bool) -> Self {
                self.common
                    .integrations
                    .get_or_insert_with(Map::new)
                    .insert(name.into(), Value::Bool(enabled));
                self
            }

            /// Enables one destination with options (`"integrations": {name: options}`).
            pub fn integration_options(mut self, name: impl Into<String>, options: Value) -> Self {
                self.common
                    .integrations
                    .get_or_insert_with(Map::new)
                    .insert(name.into(), options);
                self
            }

            /// Replaces the whole `integrations` object.
            pub fn integrations(mut self, integrations: Map<String, Value>) -> Self {
                self.common.integrations = Some(integrations);
                self
            }

            /// Sets `timestamp`, when the event happened.
            pub fn timestamp(mut self, at: SystemTime) -> Self {
                self.common.timestamp = Some(at);
                self
            }

            /// Sets `messageId`; it must be unique and under 100 characters.
            pub fn message_id(mut self, id: impl Into<String>) -> Self {
                self.common.message_id = Some(id.into());
                self
            }

            /// The common fields, for inspection.
            pub fn common(&self) -> &Common {
                &self.common
            }
        }

        impl From<$ty> for Message {
            fn from(message: $ty) -> Message {
                Message::$ty(message)
            }
        }
    )+};
}

/// `identify`: ties a user to their traits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identify {
    /// Common fields.
    pub common: Common,
    /// `traits`: a JSON object, or none.
    pub traits: Object,
}

impl Identify {
    /// An identify with no ids yet; set `user_id` or `anonymous_id`.
    pub fn new() -> Identify {
        Identify::default()
    }

    /// Sets `traits`, which must serialize to a JSON object: a [`Value`] (kept as it is) or
    /// any owned `Serialize` value (written to JSON text now, no `Value` built; see
    /// [`Object::new`]).
    pub fn traits<T: Serialize + 'static>(mut self, traits: T) -> Self {
        self.traits = Object::new(traits);
        self
    }
}

/// `track`: records an action the user performed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    /// Common fields.
    pub common: Common,
    /// `event`: the action's name, such as `"Order Completed"`.
    pub event: String,
    /// `properties`: a JSON object, or none.
    pub properties: Object,
}

impl Track {
    /// A track of `event`; set `user_id` or `anonymous_id`.
    pub fn new(event: impl Into<String>) -> Track {
        Track {
            event: event.into(),
            ..Track::default()
        }
    }

    /// Sets `properties`, which must serialize to a JSON object: a [`Value`] (kept as it is) or
    /// any owned `Serialize` value (written to JSON text now, no `Value` built; see
    /// [`Object::new`]).
    pub fn properties<T: Serialize + 'static>(mut self, properties: T) -> Self {
        self.properties = Object::new(properties);
        self
    }
}

/// `page`: a web page view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// Common fields.
    pub common: Common,
    /// `name` of the page.
    pub name: Option<String>,
    /// `category` of the page.
    pub category: Option<String>,
    /// `properties`: a JSON object, or none.
    pub properties: Object,
}

/// `screen`: a mobile screen view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Screen {
    /// Common fields.
    pub common: Common,
    /// `name` of the screen.
    pub name: Option<String>,
    /// `category` of the screen.
    pub category: Option<String>,
    /// `properties`: a JSON object, or none.
    pub properties: Object,
}

/// Generates the shared builder of the two view types.
macro_rules! view_options {
    ($($ty:ident),+) => {$(
        impl $ty {
            /// A view with no name yet; set `user_id` or `anonymous_id`.
            pub fn new() -> $ty {
                $ty::default()
            }

            /// Sets `name`.
            pub fn name(mut self, name: impl Into<String>) -> Self {
                self.name = Some(name.into());
                self
            }

            /// Sets `category`.
            pub fn category(mut self, category: impl Into<String>) -> Self {
                self.category = Some(category.into());
                self
            }

            /// Sets `properties`, which must serialize to a JSON object: a [`Value`] (kept as
            /// it is) or any owned `Serialize` value (written to JSON text now, no `Value`
            /// built; see [`Object::new`]).
            pub fn properties<T: Serialize + 'static>(mut self, properties: T) -> Self {
                self.properties = Object::new(properties);
                self
            }
        }
    )+};
}

view_options!(Page, Screen);

/// `group`: ties a user to an account or organisation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// Common fields.
    pub common: Common,
    /// `groupId`: the group's id.
    pub group_id: String,
    /// `traits` of the group: a JSON object, or none.
    pub traits: Object,
}

impl Group {
    /// A group message for `group_id`; set `user_id` or `anonymous_id`.
    pub fn new(group_id: impl Into<String>) -> Group {
        Group {
            group_id: group_id.into(),
            ..Group::default()
        }
    }

    /// Sets `traits`, which must serialize to a JSON object: a [`Value`] (kept as it is) or
    /// any owned `Serialize` value (written to JSON text now, no `Value` built; see
    /// [`Object::new`]).
    pub fn traits<T: Serialize + 'static>(mut self, traits: T) -> Self {
        self.traits = Object::new(traits);
        self
    }
}

/// `alias`: says that `previous_id` and `user_id` are the same person.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alias {
    /// Common fields; `user_id` is required.
    pub common: Common,
    /// `previousId`: the identity being merged into `userId`.
    pub previous_id: String,
}

impl Alias {
    /// Aliases `previous_id` to `user_id`.
    pub fn new(user_id: impl Into<String>, previous_id: impl Into<String>) -> Alias {
        Alias {
            common: Common {
                user_id: Some(user_id.into()),
                ..Common::default()
            },
            previous_id: previous_id.into(),
        }
    }
}

/// A message of any `type`, with its own fields passed through untouched.
///
/// Use it for types the API adds later, for your own types, or to relay a message received as
/// JSON without losing fields ([`Message::from_json`]). A `Custom` whose type is one of the six
/// is validated by that type's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Custom {
    /// Common fields.
    pub common: Common,
    /// The `type`.
    pub kind: Kind,
    /// Every other field, written as given. A `timestamp` here is kept as is.
    pub fields: Map<String, Value>,
}

impl Custom {
    /// A message of type `kind` with no fields yet.
    pub fn new(kind: impl AsRef<str>) -> Custom {
        Custom {
            common: Common::default(),
            kind: Kind::from_wire(kind.as_ref()),
            fields: Map::new(),
        }
    }

    /// Sets one field. Common fields (`userId`, `context`, ...) belong in their own methods.
    pub fn field(mut self, name: impl Into<String>, value: Value) -> Self {
        self.fields.insert(name.into(), value);
        self
    }
}

common_options!(Identify, Track, Page, Screen, Group, Alias, Custom);

/// Any message the client can send.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// An `identify`.
    Identify(Identify),
    /// A `track`.
    Track(Track),
    /// A `page`.
    Page(Page),
    /// A `screen`.
    Screen(Screen),
    /// A `group`.
    Group(Group),
    /// An `alias`.
    Alias(Alias),
    /// Any other type, or a relayed message.
    Custom(Custom),
}

impl Message {
    /// The wire `type`, as [`Message::kind`] names it, without copying a custom kind.
    pub fn type_name(&self) -> &str {
        match self {
            Message::Custom(custom) => custom.kind.as_str(),
            other => other.kind().as_str_static(),
        }
    }

    /// The message's `type`.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Identify(_) => Kind::Identify,
            Message::Track(_) => Kind::Track,
            Message::Page(_) => Kind::Page,
            Message::Screen(_) => Kind::Screen,
            Message::Group(_) => Kind::Group,
            Message::Alias(_) => Kind::Alias,
            Message::Custom(custom) => custom.kind.clone(),
        }
    }

    /// The common fields.
    pub fn common(&self) -> &Common {
        match self {
            Message::Identify(m) => &m.common,
            Message::Track(m) => &m.common,
            Message::Page(m) => &m.common,
            Message::Screen(m) => &m.common,
            Message::Group(m) => &m.common,
            Message::Alias(m) => &m.common,
            Message::Custom(m) => &m.common,
        }
    }

    /// The common fields, to change.
    pub fn common_mut(&mut self) -> &mut Common {
        match self {
            Message::Identify(m) => &mut m.common,
            Message::Track(m) => &mut m.common,
            Message::Page(m) => &mut m.common,
            Message::Screen(m) => &mut m.common,
            Message::Group(m) => &mut m.common,
            Message::Alias(m) => &mut m.common,
            Message::Custom(m) => &mut m.common,
        }
    }

    /// Takes a message as it appears on the wire (one JSON object with a `type`), keeping every
    /// field. `userId`, `anonymousId`, `messageId`, `context` and `integrations` become the
    /// [`Common`] fields (a `null` counts as absent); everything else, `timestamp` included, is
    /// kept verbatim. The result is not validated yet: the client does that on enqueue.
    pub fn from_json(value: Value) -> Result<Message, crate::ValidationError> {
        let Value::Object(mut fields) = value else {
            return Err(crate::ValidationError::NotAnObject {
                field: "message",
                found: json_type_name(&value),
            });
        };
        let kind = match fields.remove("type") {
            Some(Value::String(kind)) if !kind.is_empty() => Kind::from_wire(&kind),
            _ => return Err(crate::ValidationError::MissingType),
        };
        let mut take_string =
            |name: &'static str| -> Result<Option<String>, crate::ValidationError> {
                match fields.remove(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s)),
                    Some(other) => Err(crate::ValidationError::NotAString {
                        field: name,
                        found: json_type_name(&other),
                    }),
                }
            };
        let user_id = take_string("userId")?;
        let anonymous_id = take_string("anonymousId")?;
        let message_id = take_string("messageId")?;
        let context = match fields.remove("context") {
            None | Some(Value::Null) => None,
            Some(context) => Some(context),
        };
        let integrations = match fields.remove("integrations") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                return Err(crate::ValidationError::NotAnObject {
                    field: "integrations",
                    found: json_type_name(&other),
                });
            }
        };
        let common = Common {
            user_id,
            anonymous_id,
            context,
            integrations,
            timestamp: None,
            message_id,
        };
        Ok(Message::Custom(Custom {
            common,
            kind,
            fields,
        }))
    }
}
