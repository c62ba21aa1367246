//! The frame decoder, on anything the network can deliver. The first byte
//! picks the mode: as received (almost never authentic, so this covers the
//! checks before authentication), or re-signed with the cluster key, so the
//! decoder behind the HMAC (lengths, flags, ops, keys, decryption) sees
//! arbitrary "authentic" input too. It must return, never panic; what it
//! accepts must seal (plain and compressed) and open again to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memcast_core::cluster_key::TAG_LEN;
use memcast_core::{Frame, Keyring, SharedKey};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = SharedKey::from_secret(&[7u8; 32]).unwrap();
    let old = SharedKey::from_secret(&[8u8; 32]).unwrap();
    let ring = Keyring::new(key.clone(), Some(old.clone()), mode & 2 != 0);
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let signer = if mode & 4 == 0 { &key } else { &old };
        let mut b = rest.to_vec();
        // Point the key id at the signer so the tag is checked, then sign.
        if b.len() >= 11 {
            b[7..11].copy_from_slice(&signer.id().to_be_bytes());
        }
        let tag: [u8; TAG_LEN] = signer.tag(&b);
        b.extend_from_slice(&tag);
        b
    };
    if let Ok((frame, _)) = Frame::open_envelope(&bytes, &ring, 1 << 16) {
        let again = Frame::open(&frame.seal(&ring), &ring, 1 << 16);
        assert_eq!(again.as_ref(), Ok(&frame));
        let compressed = Frame::open(&frame.seal_compressed(&ring, 1), &ring, 1 << 16);
        assert_eq!(compressed.as_ref(), Ok(&frame));
    }
});
