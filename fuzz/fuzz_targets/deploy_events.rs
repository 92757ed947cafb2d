//! Any bytes as a deploy event: `classify` answers a request, an ignore or an InputError — it
//! never panics, and a request it returns passes its own checks again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qflows_workflows::scan::{Classified, classify};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(Classified::Scan(request)) = classify(&event) {
        for image in &request.images {
            // Every image the classifier accepted is a valid reference in canonical form.
            let again = qflows_workflows::scan::image_ref::ImageRef::parse(&image.canonical())
                .expect("a classified image re-parses");
            assert_eq!(again.canonical(), image.canonical());
        }
    }
});
