//! Any bytes on the BGP port, cut into messages the way a session reads them: every
//! verdict is a whole message within the buffer, a wait, or a NOTIFICATION that
//! encodes to a valid message itself; never a panic.
#![no_main]
use control::bgp::frame::{next_message, MAX_EXTENDED_LEN, MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, &[u8])| {
    let (extended, mut stream) = input;
    let max = if extended { MAX_EXTENDED_LEN } else { MAX_LEN };
    loop {
        match next_message(stream, max) {
            Ok(Some(n)) => {
                assert!(n >= 19 && n <= stream.len() && n <= max);
                stream = &stream[n..];
            }
            Ok(None) => break,
            Err(notification) => {
                let bytes = notification.encode();
                assert_eq!(next_message(&bytes, MAX_LEN), Ok(Some(bytes.len())));
                break;
            }
        }
    }
});
