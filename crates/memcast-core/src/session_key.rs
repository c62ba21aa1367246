//! memcached key rules, checked before a key reaches a socket: the text
//! protocol splits on spaces and ends a command at CR/LF, so such a key could
//! smuggle a second command.

/// memcached's own limit on key length.
pub const MAX_KEY_LEN: usize = 250;

/// Non-empty, at most 250 bytes, no spaces and no control characters.
pub fn is_valid(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.iter().all(|&b| b > b' ' && b != 0x7f)
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
}
