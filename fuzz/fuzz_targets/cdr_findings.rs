//! Any bytes as a CDR findings document: the lenient reader either refuses the document or
//! reports every element as used or skipped — it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qflows_activities::cdr::findings::read_document;

fuzz_target!(|data: &[u8]| {
    let mut seen = 0u64;
    if let Ok(n) = read_document(data, |_| seen += 1) {
        assert_eq!(n, seen, "every element is reported once");
    }
});
