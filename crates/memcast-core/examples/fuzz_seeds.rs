//! Writes the seed corpus of the fuzz targets (fuzz/corpus/*): real frames
//! (plain, encrypted, compressed, every op), peer requests and response streams, config
//! files and php.ini values. `cargo run -p memcast-core --example fuzz_seeds`
//! from the repository root regenerates them.

use std::path::Path;

use memcast_core::cluster_key::TAG_LEN;
use memcast_core::peer::{self, BucketSet, Request};
use memcast_core::{Frame, Keyring, Op, SharedKey, StoredValue, Version};

fn main() {
    let root = Path::new("fuzz/corpus");
    let key = SharedKey::from_secret(&[7u8; 32]).unwrap();
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let version = Version {
        millis: 1_800_000_000_000,
        counter: 2,
        origin: 5,
    };
    let frame = |op: Op, value: &[u8]| Frame {
        op,
        origin: 5,
        epoch: 1_799_999_000_000,
        seq: 3,
        version,
        ttl: 1440,
        key: if op == Op::Heartbeat {
            Vec::new()
        } else {
            b"memcast.sess.abc123".to_vec()
        },
        value: value.to_vec(),
    };
    let session = StoredValue::live(version, b"user|s:5:\"alice\";n|i:3;").encode();
    let cart: String = (0..40)
        .map(|i| format!("i:{i};a:2:{{s:5:\"title\";s:10:\"Product {i:02}\";}}"))
        .collect();
    let large = StoredValue::live(version, format!("cart|a:40:{{{cart}}}").as_bytes()).encode();
    let frames = [
        ("set", frame(Op::Set, &session)),
        ("delete", frame(Op::Delete, b"")),
        ("touch", frame(Op::Touch, b"")),
        ("heartbeat", frame(Op::Heartbeat, b"10.0.0.1:7711")),
    ];
    // Sealed compressed (its value is at least the threshold).
    let compressed = frame(Op::Set, &large);
    for (name, f, threshold) in
        frames
            .iter()
            .map(|(name, f)| (*name, f, 0))
            .chain([("set-compressed", &compressed, 1024)])
    {
        for (mode, encrypt) in [(0u8, false), (2u8, true)] {
            let sealed = f.seal_compressed(&Keyring::new(key.clone(), None, encrypt), threshold);
            // Mode 0: as received.
            write(
                "frame_open",
                &format!("{name}-{mode}"),
                &[&[mode][..], &sealed].concat(),
            );
            // Mode 1 (+2): the target re-signs, so leave the tag off.
            write(
                "frame_open",
                &format!("{name}-resign-{}", mode | 1),
                &[&[mode | 1][..], &sealed[..sealed.len() - TAG_LEN]].concat(),
            );
        }
    }
    let requests = [
        Request::Range {
            origin: 5,
            epoch: 1,
            from: 3,
            to: 9,
        },
        Request::Snapshot,
        Request::Digest {
            cutoff_ms: 1_800_000_000_000,
        },
        Request::Buckets(BucketSet([1, 0, 1 << 63, 7])),
    ];
    for (i, r) in requests.iter().enumerate() {
        let mut stream = r.encode(&key, 1_800_000_000_000).to_vec();
        for (_, f) in &frames {
            peer::send_frame(&mut stream, f, &key).unwrap();
        }
        if i == 0 {
            peer::write_gone(&mut stream).unwrap();
        }
        peer::write_end(&mut stream).unwrap();
        write("peer_stream", &format!("request-{i}"), &stream);
    }
    let configs = [
        "memcached = \"127.0.0.1:11211\"\nsubscribe = [\"epgm://eth0;239.192.1.1:5555\"]\nkey_file = \"/etc/memcast/key\"\n",
        "subscribe = [\"tcp://10.0.0.2:5555\"]\nkey_file = \"/k\"\nrelay = \"ipc:///run/memcast/publish.sock\"\npublish = \"epgm://eth0;239.192.1.1:5555\"\nlisten = \"10.0.0.1:7711\"\npeer = [\"10.0.0.2:7711\", \"10.0.0.3:7711\"]\nencrypt = true\naccept_key_file = \"/k2\"\nmax_frame_age_ms = 30000\n",
        "127.0.0.1:11211, 10.0.0.2:11211;10.0.0.3",
        "epgm://eth0;239.192.1.1:5555\n/etc/memcast/key\nmemcast.sess.\n100\n500\n500ms\n100000\n2000\n10000\n1000\n50\n1\n1\n10\n200\n100\n0\n/etc/memcast/key.next\non\n4M\n",
    ];
    for (i, c) in configs.iter().enumerate() {
        write("config", &format!("config-{i}"), c.as_bytes());
    }
    println!("wrote seeds under {}", root.display());
}
