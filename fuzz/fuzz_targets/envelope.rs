//! Any decrypted plaintext -> an envelope or a typed error, never a panic;
//! what decodes re-encodes to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retalk_proto::envelope::Envelope;
use retalk_proto::olm::decode_message;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        assert_eq!(Envelope::decode(&envelope.encode()).ok(), Some(envelope));
    }
    // And as a wire body of either type.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_message(0, text);
        let _ = decode_message(1, text);
    }
});
