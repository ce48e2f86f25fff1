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
//! as rejected with the server's reason, the rest as delivered. Our collector also says how
//! many messages it already had (`"duplicates": n`), counted in [`crate::Stats::duplicates`].
//! The plain answer is recognised without parsing (a substring check), so the usual case
//! costs nothing.

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

/// What a 2xx answer says beyond "success".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The messages it lists as rejected.
    pub(crate) rejected: Vec<Listed>,
    /// How many messages it already had.
    pub(crate) duplicates: u64,
}

/// What a 2xx `body` says; nothing for the plain success answer. An answer that cannot be
/// read (the body is not JSON, or was cut at the transport's limit) is an error saying why:
/// the caller reports the batch delivered, and logs it.
pub(crate) fn read(body: &str) -> Result<Answer, String> {
    if !body.contains("\"rejected\"") && !body.contains("\"duplicates\"") {
        return Ok(Answer::default());
    }
    let answer: Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let duplicates = answer
        .get("duplicates")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let rejected = match answer.get("rejected") {
        None => Vec::new(),
        Some(Value::Array(entries)) => listed(entries),
        Some(_) => return Err("`rejected` is not a list".into()),
    };
    Ok(Answer {
        rejected,
        duplicates,
    })
}

/// The entries of a `rejected` list.
fn listed(entries: &[Value]) -> Vec<Listed> {
    entries
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
        .collect()
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
        assert_eq!(read(r#"{"success":true}"#), Ok(Answer::default()));
        assert_eq!(read(""), Ok(Answer::default()));
        let duplicates = read(r#"{"success":true,"duplicates":2}"#).unwrap();
        assert_eq!((duplicates.rejected.len(), duplicates.duplicates), (0, 2));
    }

    #[test]
    fn a_list_is_read_and_matched_by_index_then_by_id() {
        let body = r#"{"success":true,"rejected":[
            {"index":1,"messageId":"b","reason":"unknown message type \"x\""},
            {"index":0,"messageId":"c","reason":"bad"},
            {"messageId":"zz","reason":"not ours"}]}"#;
        let listed = read(body).unwrap().rejected;
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
        assert!(read(r#"{"success":true,"rejected":[{"index":0,"#).is_err());
        assert!(read(r#"{"success":true,"rejected":5}"#).is_err());
    }
}
