//! Arbitrary bytes into `parse_request_head`: must never panic, and every
//! success must honour the documented guarantees.
#![no_main]

use berth_http::{parse_request_head, Limits};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8], limits: &Limits) {
    match parse_request_head(data, limits) {
        Ok(Some((head, n))) => {
            assert!(n <= data.len() && n <= limits.head_bytes_max);
            assert!(head.target.len() <= limits.target_bytes_max);
            assert!(head.headers.len() <= limits.headers_max);
            let _ = (head.path(), head.query(), head.headers.get("host"));
            // The head alone parses to the same value.
            assert_eq!(parse_request_head(&data[..n], limits), Ok(Some((head, n))));
            // No strict prefix is a complete head.
            assert!(!matches!(
                parse_request_head(&data[..n - 1], limits),
                Ok(Some(_))
            ));
        }
        Ok(None) => assert!(data.len() < limits.head_bytes_max),
        Err(e) => assert!(matches!(e.status(), 400 | 414 | 431 | 501 | 505)),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, &Limits::default());
    check(
        data,
        &Limits {
            head_bytes_max: 256,
            headers_max: 4,
            target_bytes_max: 32,
        },
    );
});
