//! template.yaml: any text is parsed and resolved (parameters, conditions, intrinsics,
//! every resource kind lambdaml local reads) or refused, never a panic or a hang.
#![no_main]

use lambdaml_cli::template::{Stack, StackContext, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse(text) else {
        return;
    };
    let Ok(stack) = Stack::new(template, StackContext::new("fuzz")) else {
        return;
    };
    let _ = stack.queues();
    let _ = stack.buckets();
    let _ = stack.functions();
    let _ = stack.event_sources();
    let _ = stack.routes();
});
