//! Any string as an image reference: parsing never panics, and the canonical form of an
//! accepted reference parses to the same canonical form (normalisation is idempotent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qflows_workflows::scan::image_ref::ImageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(image) = ImageRef::parse(text) {
        let canonical = image.canonical();
        let again = ImageRef::parse(&canonical).expect("a canonical reference re-parses");
        assert_eq!(again.canonical(), canonical);
    }
});
