//! memcached key rules, checked before a key reaches a socket: the text
//! protocol splits on spaces and ends a command at CR/LF, so such a key could
//! smuggle a second command.

/// memcached's own limit on key length.
pub const MAX_KEY_LEN: usize = 250;

/// Non-empty, at most 250 bytes, no spaces and no control characters.
pub fn is_valid(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

/// A short, stable name for a key in logs: the first 8 bytes of its
/// SHA-256, in hex. The key holds the session id, a login credential, which
/// never goes to a log.
pub fn log_name(key: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_would_break_the_text_protocol_are_invalid() {
        assert!(is_valid(b"memcast.sess.abc,-DEF123"));
        assert!(!is_valid(b""));
        assert!(!is_valid(b"a b"));
        assert!(!is_valid(b"a\r\nget x"));
        assert!(!is_valid(b"a\tb"));
        assert!(!is_valid(b"a\0b"));
        assert!(!is_valid(b"a\x7fb"));
        assert!(is_valid(&[b'k'; 250]));
        assert!(!is_valid(&[b'k'; 251]));
    }

    #[test]
    fn a_log_name_hides_the_key_and_is_stable() {
        let name = log_name(b"memcast.sess.secretid");
        assert_eq!(name.len(), 16);
        assert!(!name.contains("secretid"));
        assert_eq!(name, log_name(b"memcast.sess.secretid"));
        assert_ne!(name, log_name(b"memcast.sess.secretie"));
    }
}
