//! The JSON memory budget: never panics, and whatever it lets through parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let budget = 1 << 16;
    if lambdaml_score::budget::check(data, budget).is_ok() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(data);
        assert!(parsed.is_ok(), "the budget passed malformed JSON");
    }
});
