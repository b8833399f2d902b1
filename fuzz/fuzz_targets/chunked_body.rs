//! Arbitrary bytes into a chunked (and a Content-Length) `BodyDecoder`,
//! whole and split at a fuzzer-chosen point: must never panic, and the split
//! decode must equal the whole decode.
#![no_main]

use berth_http::{BodyDecoder, BodyError, BodyFraming};
use libfuzzer_sys::fuzz_target;

/// Decodes `input` delivered in two pieces, `input[..cut]` then the rest,
/// carrying unconsumed bytes over like a server does.
fn decode(
    framing: BodyFraming,
    input: &[u8],
    cut: usize,
) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let mut dec = BodyDecoder::new(&framing);
    let mut out = Vec::new();
    let mut pos = 0;
    for end in [cut, input.len()] {
        while pos < end {
            let d = dec.decode(&input[pos..end])?;
            assert!(d.consumed <= end - pos);
            assert_eq!(d.done, dec.is_done());
            out.extend_from_slice(d.data);
            pos += d.consumed;
            if d.consumed == 0 {
                assert!(d.done, "no progress on non-empty input");
                break;
            }
        }
    }
    Ok((out, pos, dec.is_done()))
}

fuzz_target!(|data: &[u8]| {
    // First two bytes choose the split point and a Content-Length.
    let (cut, len, input) = match data {
        [a, b, rest @ ..] => (
            (usize::from(*a) << 8 | usize::from(*b)) % (rest.len() + 1),
            u64::from(*b),
            rest,
        ),
        _ => (0, 0, data),
    };
    for framing in [BodyFraming::Chunked, BodyFraming::Length(len)] {
        let whole = decode(framing, input, input.len());
        let split = decode(framing, input, cut);
        assert_eq!(whole, split, "framing {framing:?}, cut {cut}");
        if let Ok((payload, consumed, _)) = &whole {
            assert!(payload.len() <= *consumed);
        }
    }
});
