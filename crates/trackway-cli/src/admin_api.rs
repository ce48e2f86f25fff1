//! A small client of the collector's admin API, for `tail` and `replay`.

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::Failure;

/// Where the collector's admin API is, and its token.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The collector's base URL (the alias is the older spelling).
    #[arg(
        long = "host",
        visible_alias = "url",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) url: String,
    /// The admin token the collector printed at start-up.
    #[arg(long, env = "TRACKWAY_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: String,
}

impl AdminArgs {
    fn agent(timeout: Option<Duration>) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .build()
            .into()
    }

    /// Names the collector that could not be reached, and what to do.
    fn unreachable(&self, error: &ureq::Error) -> Failure {
        Failure::Failed(format!(
            "cannot reach the collector at {}: {error}; is it running? (`trackway serve` or \
             `trackway demo` starts one, and prints its address for --host)",
            self.url
        ))
    }

    /// GETs `path`, for a response read as a stream (no overall timeout).
    pub(crate) fn stream(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let response = Self::agent(None)
            .get(format!("{}{path}", self.url.trim_end_matches('/')))
            .header("authorization", format!("Bearer {}", self.admin_token))
            .call()
            .map_err(|e| self.unreachable(&e))?;
        check(response)
    }

    /// POSTs to `path` and returns the JSON answer.
    pub(crate) fn post(&self, path: &str) -> Result<Value, Failure> {
        let response = Self::agent(Some(Duration::from_secs(300)))
            .post(format!("{}{path}", self.url.trim_end_matches('/')))
            .header("authorization", format!("Bearer {}", self.admin_token))
            .send_empty()
            .map_err(|e| self.unreachable(&e))?;
        let text = check(response)?
            .into_body()
            .read_to_string()
            .map_err(|e| Failure::Failed(format!("reading the answer: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| Failure::Failed(format!("the answer is not JSON: {e}")))
    }
}

fn check(
    response: ureq::http::Response<ureq::Body>,
) -> Result<ureq::http::Response<ureq::Body>, Failure> {
    match response.status().as_u16() {
        200 => Ok(response),
        401 => Err(Failure::Usage(
            "the admin token was refused (--admin-token)".into(),
        )),
        // Something the command line named does not exist (a destination to replay): the
        // collector's answer says what there is.
        404 => {
            let body = response.into_body().read_to_string().unwrap_or_default();
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|answer| answer["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            Err(Failure::Usage(message))
        }
        status => {
            let body = response.into_body().read_to_string().unwrap_or_default();
            Err(Failure::Failed(format!(
                "the collector answered {status}: {body}"
            )))
        }
    }
}
