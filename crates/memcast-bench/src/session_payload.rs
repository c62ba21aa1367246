//! The one session every part of the bench writes: what PHP's session
//! encoding (`session.serialize_handler = php`, `name|serialized;...`) makes
//! of a realistic logged-in shop session, 2 048 bytes. A repeated byte would
//! compress to nothing and flatter any wire compression; in this one about
//! 40 % of the bytes are random hex tokens (CSRF, remember-me, API key,
//! fingerprint, form nonces, cart line ids) beside the usual ints, short
//! strings and field names.
//!
//! Rust frames carry [`encoded`] as their value; PHP pages and scripts load
//! it with `session_decode(...)` ([`php_decode`]) and check [`CHECK_KEY`]
//! came back (the page's proof the session survived).

use std::fmt::Write as _;
use std::sync::OnceLock;

/// The exact size of [`encoded`].
pub const SIZE: usize = 2048;

/// `$_SESSION['auth']['fingerprint']` holds [`check_value`]: a page that finds
/// it changed or missing answers 500.
pub const CHECK_KEY: &str = "fingerprint";

enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
    List(Vec<Value>),
    Map(Vec<(&'static str, Value)>),
}

fn s(text: impl Into<String>) -> Value {
    Value::Str(text.into())
}

/// PHP's `serialize()` of a value (ints, bools, strings, arrays).
fn serialize(v: &Value, out: &mut String) {
    match v {
        Value::Int(i) => {
            let _ = write!(out, "i:{i};");
        }
        Value::Bool(b) => {
            let _ = write!(out, "b:{};", u8::from(*b));
        }
        Value::Str(t) => {
            let _ = write!(out, "s:{}:\"{t}\";", t.len());
        }
        Value::List(items) => {
            let _ = write!(out, "a:{}:{{", items.len());
            for (k, item) in items.iter().enumerate() {
                let _ = write!(out, "i:{k};");
                serialize(item, out);
            }
            out.push('}');
        }
        Value::Map(fields) => {
            let _ = write!(out, "a:{}:{{", fields.len());
            for (k, item) in fields {
                let _ = write!(out, "s:{}:\"{k}\";", k.len());
                serialize(item, out);
            }
            out.push('}');
        }
    }
}

/// Deterministic random hex (splitmix64): the same session every run.
struct Hex(u64);

impl Hex {
    fn token(&mut self, chars: usize) -> String {
        let mut t = String::with_capacity(chars);
        while t.len() < chars {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let _ = write!(t, "{z:016x}");
        }
        t.truncate(chars);
        t
    }
}

struct Built {
    encoded: String,
    hex_bytes: usize,
    fingerprint: String,
}

fn build() -> Built {
    let mut rng = Hex(0x6d65_6d63_6173_7431);
    let mut hex_bytes = 0;
    let mut hex = |chars: usize| {
        hex_bytes += chars;
        rng.token(chars)
    };
    let fingerprint = hex(64);
    let mut top: Vec<(&'static str, Value)> = vec![
        ("csrf_token", s(hex(64))),
        (
            "user",
            Value::Map(vec![
                ("id", Value::Int(48_213)),
                ("login", s("j.martinez7")),
                ("email", s("julia.martinez@example.com")),
                ("name", s("Julia Martinez")),
                ("last_login", Value::Int(1_764_601_234)),
                ("locale", s("de_DE")),
                ("remember_token", s(hex(64))),
                ("api_key", s(hex(40))),
            ]),
        ),
        (
            "auth",
            Value::Map(vec![
                ("method", s("password")),
                ("mfa", Value::Bool(true)),
                ("verified_at", Value::Int(1_764_601_240)),
                (CHECK_KEY, s(fingerprint.clone())),
                ("ip", s("203.0.113.57")),
            ]),
        ),
        (
            "cart",
            Value::Map(vec![
                (
                    "items",
                    Value::List(
                        [
                            ("SKU-10442", "Merino sweater, navy, M", 1, 8_990),
                            ("SKU-20817", "Cotton t-shirt, white, M", 3, 1_999),
                            ("SKU-33105", "Leather belt, 95 cm", 1, 4_950),
                        ]
                        .into_iter()
                        .map(|(sku, name, qty, cents)| {
                            Value::Map(vec![
                                ("line_id", s(hex(32))),
                                ("sku", s(sku)),
                                ("name", s(name)),
                                ("qty", Value::Int(qty)),
                                ("price_cents", Value::Int(cents)),
                            ])
                        })
                        .collect(),
                    ),
                ),
                ("currency", s("EUR")),
            ]),
        ),
        ("oauth_state", s(hex(32))),
        (
            "form_nonces",
            Value::List((0..12).map(|_| s(hex(40))).collect()),
        ),
    ];
    let encode = |fields: &[(&'static str, Value)]| {
        let mut out = String::new();
        for (name, v) in fields {
            out.push_str(name);
            out.push('|');
            serialize(v, &mut out);
        }
        out
    };
    // A flash message fills the session up to SIZE exactly.
    let without = encode(&top).len();
    let overhead = "flash|s:000:\"\";".len();
    let filler_len = SIZE.saturating_sub(without + overhead);
    debug_assert!(
        (100..1000).contains(&filler_len),
        "{without} B before the filler"
    );
    let words = "Your order confirmation was sent to your email address. ";
    let filler: String = words.chars().cycle().take(filler_len).collect();
    top.push(("flash", s(filler)));
    let encoded = encode(&top);
    Built {
        encoded,
        hex_bytes,
        fingerprint,
    }
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(build)
}

/// The encoded session, [`SIZE`] bytes.
pub fn encoded() -> Vec<u8> {
    built().encoded.as_bytes().to_vec()
}

/// The session as memcast stores and sends it by default (`memcast.seal`
/// with the key file that publishing needs): LZ4-compressed inside
/// XChaCha20-Poly1305, sealed format 2 at `memcast.compress_threshold`'s
/// default 1 024. memcastd moves it as it is and never opens it.
pub fn sealed(key: &memcast_core::SharedKey) -> Vec<u8> {
    let keyring = memcast_core::Keyring::new(key.clone(), None, false);
    memcast_core::session_seal::SessionSeal::new(&keyring).seal_compressed(
        b"memcast.sess.bench",
        b"",
        &encoded(),
        1024,
    )
}

/// `$_SESSION['auth'][CHECK_KEY]`, as PHP should read it back.
pub fn check_value() -> &'static str {
    &built().fingerprint
}

/// A PHP expression that loads the session into `$_SESSION` (inside an
/// active session): `session_decode('...')`. The encoding holds no `'` or
/// `\`, so a single-quoted literal carries it as is.
pub fn php_decode() -> String {
    let e = &built().encoded;
    debug_assert!(!e.contains('\'') && !e.contains('\\'));
    format!("session_decode('{e}')")
}

/// The encoded session as a PHP single-quoted literal (raw get/set).
pub fn php_literal() -> String {
    format!("'{}'", built().encoded)
}

/// The length of [`sealed`] (a throwaway key: the length does not depend
/// on it).
pub fn sealed_len() -> usize {
    let dir = memcast_testkit::TempDir::new("payload");
    let key = memcast_core::SharedKey::from_file(&dir.key_file("k", 1)).expect("key");
    sealed(&key).len()
}

/// One sentence on its shape, for the report.
pub fn describe() -> String {
    let b = built();
    format!(
        "Every session and frame carries one realistic {} B PHP session (session_encode() of a logged-in shop user: user record, auth, a 3-line cart, a flash message), {} B ({:.0} %) of it random hex tokens (CSRF, remember-me, API key, fingerprint, 12 form nonces, cart line ids: half a byte of entropy per byte), the rest PHP's serialization, field names, ints and short text. Frames and stored values carry it as memcast does by default: sealed at rest (`memcast.seal` with the key file publishing needs), compressed inside the seal, {} B",
        b.encoded.len(),
        b.hex_bytes,
        100.0 * b.hex_bytes as f64 / b.encoded.len() as f64,
        sealed_len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_exactly_its_size_and_quotable() {
        let e = encoded();
        assert_eq!(e.len(), SIZE, "{}", describe());
        assert!(!e.contains(&b'\'') && !e.contains(&b'\\'));
        assert!(String::from_utf8_lossy(&e).contains(check_value()));
    }

    /// PHP reads it back field by field and encodes it to the same bytes.
    #[test]
    fn php_decodes_and_reencodes_the_session_unchanged() {
        let code = format!(
            "session_start(); $_SESSION = []; if (!{}) exit(2); echo $_SESSION['auth']['{CHECK_KEY}'], \"\\n\", session_encode(); session_abort();",
            php_decode()
        );
        let dir = std::env::temp_dir();
        let out = std::process::Command::new("php")
            .args(["-n", "-d", "session.use_cookies=0"])
            .arg("-d")
            .arg(format!("session.save_path={}", dir.display()))
            .args(["-r", &code])
            .output()
            .expect("php");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (check, again) = text.split_once('\n').expect("two parts");
        assert_eq!(check, check_value());
        assert_eq!(again.as_bytes(), encoded().as_slice());
    }
}
