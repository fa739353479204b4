//! Helpers shared by the contract suites: the emulator switch.

#![allow(dead_code, clippy::print_stderr)]

/// The emulator endpoint, or `None` (with a loud notice) when no emulator is configured.
/// Under `make test` (`LAMBDAML_REQUIRE_EMULATOR=1`) a missing emulator is a failure, not a
/// skip.
pub fn emulator(suite: &str) -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var_os("LAMBDAML_REQUIRE_EMULATOR").is_some() {
                panic!("{suite}: LAMBDAML_REQUIRE_EMULATOR is set but AWS_ENDPOINT_URL is not");
            }
            // Written to the stderr handle directly so the test harness's capture cannot
            // hide it: a skipped emulator suite must be visible.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {suite}: no AWS emulator (AWS_ENDPOINT_URL unset). \
                 `make test` starts moto and runs it. ***\n"
            );
            None
        }
    }
}

/// A unique, valid bucket or queue name.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The ARN of the SQS queue at `url` (on the emulator).
pub async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    lambdaml::queue::SqsQueue::new(client.clone(), url)
        .arn()
        .await
        .expect("the queue has an ARN")
}
