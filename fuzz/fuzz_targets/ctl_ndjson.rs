#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jq_fuzz::ctl_ndjson(data));
