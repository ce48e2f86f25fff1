//! Typed events: a type that knows its event name, whose fields are its properties, so that
//! the compiler checks a tracking plan's names ([`Event`], derived with the `derive`
//! feature).

use serde::Serialize;
use trackway_protocol::Track;

/// An event of a tracking plan: its name, and (serialized) its properties.
///
/// Derive it with the crate's `derive` feature: `#[derive(Serialize, trackway::Event)]` and
/// `#[event(name = "Order Completed")]` on a struct with named fields; send it with
/// [`Analytics::track_event`](crate::Analytics::track_event). Implemented by hand, it is one
/// constant:
///
/// ```
/// #[derive(serde::Serialize)]
/// struct SignedUp {
///     plan: String,
/// }
///
/// impl trackway::Event for SignedUp {
///     const NAME: &'static str = "Signed Up";
/// }
/// ```
pub trait Event: Serialize + 'static {
    /// The event's name, such as `"Order Completed"`.
    const NAME: &'static str;

    /// A track of this event, its fields as `properties`; set a user or anonymous id, and
    /// anything else, before enqueueing it.
    fn into_track(self) -> Track
    where
        Self: Sized,
    {
        Track::new(Self::NAME).properties(self)
    }
}

/// Who did something: a user id, as every call that takes a `user_id` means, or an anonymous
/// id for a visitor not yet known. A string converts to a user id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum User {
    /// `userId`: the user's id in your database.
    Id(String),
    /// `anonymousId`: an id for a visitor not yet known (a session or device id).
    Anonymous(String),
}

impl User {
    /// A known user: `userId`.
    pub fn id(id: impl Into<String>) -> User {
        User::Id(id.into())
    }

    /// An anonymous visitor: `anonymousId`.
    pub fn anonymous(id: impl Into<String>) -> User {
        User::Anonymous(id.into())
    }

    /// `track` with this user's id set.
    pub(crate) fn on(self, track: Track) -> Track {
        match self {
            User::Id(id) => track.user_id(id),
            User::Anonymous(id) => track.anonymous_id(id),
        }
    }
}

impl From<&str> for User {
    fn from(id: &str) -> User {
        User::Id(id.to_owned())
    }
}

impl From<String> for User {
    fn from(id: String) -> User {
        User::Id(id)
    }
}

impl From<&String> for User {
    fn from(id: &String) -> User {
        User::Id(id.clone())
    }
}
