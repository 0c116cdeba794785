//! The record decoder (framing, authentication, binary stored form) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hive_cred_local::fuzzing::decode_record(data);
});
