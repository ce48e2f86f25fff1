//! What a server's 2xx answer says about the messages of a batch.
//!
//! Segment answers `{"success":true}` and stores everything it acknowledged. A server may
//! instead take a batch but store some of its messages as rejected, and list them in its
//! answer; `trackway-collector` does, for a message that fails validation (an unknown `type`):
//!
//! ```text
//! 200 {"success": true, "rejected": [{"index": 1, "messageId": "...", "reason": "..."}]}
//! ```
//!
//! `index` is the message's position in the request's `batch`. Those messages are reported
//! as rejected with the server's reason, the rest as delivered. The plain answer is recognised
//! without parsing (a substring check), so the usual case costs nothing.

use serde_json::Value;

/// A message of the batch that the server listed as rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Its position in the request's `batch`, if the server said.
    pub(crate) index: Option<usize>,
    /// Its `messageId`, if the server said.
    pub(crate) message_id: Option<String>,
    /// The server's reason.
    pub(crate) reason: String,
}

/// The messages a 2xx `body` lists as rejected; empty for the plain success answer. A list
/// that cannot be read (the body is not JSON, or was cut at the transport's limit) is an
/// error saying why: the caller reports the batch delivered, and logs it.
pub(crate) fn rejected(body: &str) -> Result<Vec<Listed>, String> {
    if !body.contains("\"rejected\"") {
        return Ok(Vec::new());
    }
    let answer: Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let Some(listed) = answer.get("rejected") else {
        return Ok(Vec::new());
    };
    let Value::Array(entries) = listed else {
        return Err("`rejected` is not a list".into());
    };
    Ok(entries
        .iter()
        .map(|entry| Listed {
            index: entry
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok()),
            message_id: entry
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            reason: match entry.get("reason") {
                Some(Value::String(reason)) => reason.clone(),
                Some(other) => other.to_string(),
                None => "listed as rejected by the server".into(),
            },
        })
        .collect())
}

/// The reason for each of `ids` (the messageIds of a request's messages, in order) that
/// `listed` names: by index when the messageId there agrees (or was not given), else by
/// messageId. Entries that name no message of the request are returned apart.
pub(crate) fn match_to_messages<'a>(
    listed: &'a [Listed],
    ids: &[String],
) -> (Vec<Option<&'a str>>, Vec<&'a Listed>) {
    let mut reasons = vec![None; ids.len()];
    let mut unmatched = Vec::new();
    for entry in listed {
        let by_index = entry.index.filter(|&i| {
            i < ids.len()
                && entry
                    .message_id
                    .as_deref()
                    .is_none_or(|id| id == ids[i].as_str())
        });
        let found = by_index.or_else(|| {
            let id = entry.message_id.as_deref()?;
            ids.iter().position(|candidate| candidate == id)
        });
        match found {
            Some(i) => reasons[i] = Some(entry.reason.as_str()),
            None => unmatched.push(entry),
        }
    }
    (reasons, unmatched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_answer_lists_nothing() {
        assert_eq!(rejected(r#"{"success":true}"#), Ok(Vec::new()));
        assert_eq!(rejected(""), Ok(Vec::new()));
        assert_eq!(
            rejected(r#"{"success":true,"duplicates":2}"#),
            Ok(Vec::new())
        );
    }

    #[test]
    fn a_list_is_read_and_matched_by_index_then_by_id() {
        let body = r#"{"success":true,"rejected":[
            {"index":1,"messageId":"b","reason":"unknown message type \"x\""},
            {"index":0,"messageId":"c","reason":"bad"},
            {"messageId":"zz","reason":"not ours"}]}"#;
        let listed = rejected(body).unwrap();
        assert_eq!(listed.len(), 3);
        let ids = ["a", "b", "c"].map(String::from);
        let (reasons, unmatched) = match_to_messages(&listed, &ids);
        assert_eq!(
            reasons,
            vec![None, Some("unknown message type \"x\""), Some("bad")]
        );
        assert_eq!(unmatched.len(), 1);
        assert_eq!(unmatched[0].message_id.as_deref(), Some("zz"));
    }

    #[test]
    fn an_unreadable_list_is_an_error() {
        assert!(rejected(r#"{"success":true,"rejected":[{"index":0,"#).is_err());
        assert!(rejected(r#"{"success":true,"rejected":5}"#).is_err());
    }
}
