//! Origins as browsers send them in `Origin`, and as [`Source::allowed_origins`] lists them:
//! one normal form, so that the configured list and a request's header compare as strings.
//!
//! [`Source::allowed_origins`]: crate::config::Source::allowed_origins

/// An origin as browsers send it, normalized: `scheme://host[:port]` in lower case (a
/// trailing `/` is dropped). `None` for anything else, such as a path or the `null` origin.
pub(crate) fn parse_origin(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, host) = text.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let host_ok = !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']);
    (scheme_ok && host_ok).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_or_refused() {
        assert_eq!(
            parse_origin("https://Shop.Example/").as_deref(),
            Some("https://shop.example")
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        for bad in ["null", "shop.example", "https://", "https://a.example/path"] {
            assert_eq!(parse_origin(bad), None, "{bad}");
        }
    }
}
