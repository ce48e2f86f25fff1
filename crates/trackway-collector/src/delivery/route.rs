//! Which destinations a message goes to, as Segment defines `integrations`.
//!
//! `{"All": false, "Webhook": true}`: names match case-sensitively; a destination's own entry
//! wins over `All`; `true` or an options object enables, `false` disables; `All` defaults to
//! true, so a message without `integrations` goes everywhere.

use serde::Deserialize;
use serde_json::Value;

use crate::storage::StoredEvent;

/// True if a message with these `integrations` should go to destination `name`.
pub(crate) fn enabled(integrations: Option<&Value>, name: &str) -> bool {
    let Some(Value::Object(map)) = integrations else {
        return true;
    };
    let switch = |value: &Value| match value {
        Value::Bool(on) => *on,
        Value::Null => false,
        // An options object (or any other value) means "enabled, with these options".
        _ => true,
    };
    match map.get(name) {
        Some(value) => switch(value),
        None => map.get("All").is_none_or(switch),
    }
}

/// The event's `integrations`, read without parsing the rest of its body.
pub(crate) fn integrations(event: &StoredEvent) -> Option<Value> {
    #[derive(Deserialize)]
    struct Only {
        integrations: Option<Value>,
    }
    serde_json::from_str::<Only>(&event.body)
        .ok()
        .and_then(|o| o.integrations)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_integrations_matrix() {
        let cases = [
            (None, true),
            (Some(json!({})), true),
            (Some(json!({"All": true})), true),
            (Some(json!({"All": false})), false),
            (Some(json!({"All": false, "Webhook": true})), true),
            (Some(json!({"All": true, "Webhook": false})), false),
            (Some(json!({"Webhook": false})), false),
            (Some(json!({"Webhook": {"channel": "#sales"}})), true),
            (Some(json!({"All": false, "Webhook": {"x": 1}})), true),
            (Some(json!({"All": false, "webhook": true})), false),
            (Some(json!({"Other": false})), true),
        ];
        for (integrations, expected) in cases {
            assert_eq!(
                enabled(integrations.as_ref(), "Webhook"),
                expected,
                "{integrations:?}"
            );
        }
    }
}
