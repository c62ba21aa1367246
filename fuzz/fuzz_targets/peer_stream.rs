//! What a peer connection can carry: a signed request (repair, snapshot,
//! digest, buckets), a response stream of length-prefixed records, the frames
//! inside them, digest tables and stored-value headers. None may panic or
//! allocate beyond its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memcast_core::peer::{self, Digests, Record, Request, REQUEST_LEN};
use memcast_core::cluster_key::TAG_LEN;
use memcast_core::{Frame, SharedKey, StoredValue};

fuzz_target!(|data: &[u8]| {
    let key = SharedKey::from_secret(&[7u8; 32]).unwrap();
    let now = 1_800_000_000_000;
    if data.len() >= REQUEST_LEN {
        let mut req = [0u8; REQUEST_LEN];
        req.copy_from_slice(&data[..REQUEST_LEN]);
        let _ = Request::decode(&req, &key, now);
        // The same bytes signed, so the parts behind the tag are reached.
        req[6..10].copy_from_slice(&key.id().to_be_bytes());
        let tag = key.tag(&req[..REQUEST_LEN - TAG_LEN]);
        req[REQUEST_LEN - TAG_LEN..].copy_from_slice(&tag);
        if let Ok(r) = Request::decode(&req, &key, now) {
            let _ = Request::decode(&r.encode(&key, now), &key, now);
        }
    }
    let mut stream = data;
    for _ in 0..64 {
        match peer::read_record(&mut stream, peer::max_record_len(1 << 16)) {
            Ok(Record::Frame(bytes)) => {
                if let Ok(frame) = Frame::open(&bytes, &key, 1 << 16) {
                    let _ = StoredValue::parse(&frame.value);
                    let _ = Digests::decode(&frame.value);
                }
                let _ = StoredValue::parse(&bytes);
                let _ = Digests::decode(&bytes);
            }
            Ok(Record::End) | Ok(Record::Gone) => {}
            Err(_) => break,
        }
    }
});
