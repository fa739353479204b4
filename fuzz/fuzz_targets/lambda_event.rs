//! Lambda events and queue messages: any bytes are classified or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lambdaml::message::Message::parse(text);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = lambdaml::lambda::classify(value);
    }
});
