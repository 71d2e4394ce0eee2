//! Character classes on the hot path of normalisation and tokenisation.
//!
//! `char::is_alphabetic` answers non-ASCII characters through a binary search of Unicode
//! tables; on Persian text that search was the largest single cost of preprocessing. These
//! functions answer ASCII and the Arabic block (U+0600–U+06FF, where almost every character of
//! the corpus lives) from a table built once from the standard library's own answers, so they
//! agree with `char` exactly, and fall back to it elsewhere.

use std::sync::LazyLock;

const ARABIC_BLOCK: u32 = 0x0600;

/// (alphabetic, alphanumeric) for U+0600..=U+06FF.
static ARABIC: LazyLock<[(bool, bool); 256]> = LazyLock::new(|| {
    let mut table = [(false, false); 256];
    for (i, entry) in table.iter_mut().enumerate() {
        if let Some(c) = char::from_u32(ARABIC_BLOCK + i as u32) {
            *entry = (c.is_alphabetic(), c.is_alphanumeric());
        }
    }
    table
});

/// Same as [`char::is_alphabetic`].
#[inline]
pub fn is_alphabetic(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    match (c as u32).checked_sub(ARABIC_BLOCK) {
        Some(i) if i < 256 => ARABIC[i as usize].0,
        _ => c.is_alphabetic(),
    }
}

/// Same as [`char::is_alphanumeric`].
#[inline]
pub fn is_alphanumeric(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    match (c as u32).checked_sub(ARABIC_BLOCK) {
        Some(i) if i < 256 => ARABIC[i as usize].1,
        _ => c.is_alphanumeric(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_standard_library_on_every_character() {
        for c in (0..=0x2FFFF).filter_map(char::from_u32) {
            assert_eq!(is_alphabetic(c), c.is_alphabetic(), "{c:?}");
            assert_eq!(is_alphanumeric(c), c.is_alphanumeric(), "{c:?}");
        }
    }
}
