//! The store header decoder (framing, scrypt caps, key unwrapping) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hive_cred_local::fuzzing::decode_header(data);
});
