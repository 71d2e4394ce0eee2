//! Tokenisation of normalised text: the [`Tokenizer`] seam, the word tokenizer used for Persian
//! (whitespace-delimited, so words are runs of letters, digits and zero-width non-joiners), and
//! hashed character n-grams (fastText's subword features, which give Persian's rich morphology
//! something to share between unseen word forms).

/// Splits normalised text into tokens. The model code only sees tokens through this trait, so
/// another tokenizer (e.g. a trained WordPiece) can be put behind it.
pub trait Tokenizer {
    /// Appends the tokens of `text` to `out`, as slices of `text`.
    fn tokenize<'a>(&self, text: &'a str, out: &mut Vec<&'a str>);
}

/// Words: maximal runs of letters, marks, digits and ZWNJ; number separators (`/ . ,` between
/// digits, as in `1394/3/27` or `51/000/000`) stay inside a number. Punctuation and symbols
/// separate tokens and are dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordTokenizer;

const ZWNJ: char = '\u{200C}';

fn is_word_char(c: char) -> bool {
    crate::chars::is_alphanumeric(c) || c == ZWNJ || is_mark(c)
}

/// Combining marks (Arabic harakat that survive when diacritic removal is off, hamza above).
fn is_mark(c: char) -> bool {
    matches!(c, '\u{0610}'..='\u{061A}' | '\u{064B}'..='\u{065F}' | '\u{0670}' | '\u{06D6}'..='\u{06ED}')
}

impl Tokenizer for WordTokenizer {
    fn tokenize<'a>(&self, text: &'a str, out: &mut Vec<&'a str>) {
        let mut start: Option<usize> = None;
        let mut chars = text.char_indices().peekable();
        let mut prev_digit = false;
        while let Some((i, c)) = chars.next() {
            let inside_number = matches!(c, '/' | '.' | ',' | '٫' | '٬')
                && prev_digit
                && chars.peek().is_some_and(|&(_, n)| n.is_ascii_digit());
            if is_word_char(c) || (inside_number && start.is_some()) {
                if start.is_none() {
                    start = Some(i);
                }
            } else if let Some(s) = start.take() {
                push_trimmed(&text[s..i], out);
            }
            prev_digit = c.is_ascii_digit();
        }
        if let Some(s) = start {
            push_trimmed(&text[s..], out);
        }
    }
}

/// A ZWNJ at either edge of a token carries no meaning.
fn push_trimmed<'a>(token: &'a str, out: &mut Vec<&'a str>) {
    let t = token.trim_matches(ZWNJ);
    if !t.is_empty() {
        out.push(t);
    }
}

/// 64-bit FNV-1a: a stable hash (same value on every platform and release), needed because the
/// bucket of an n-gram is part of a saved model.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Calls `f` with the hash of every character n-gram (`min..=max` characters) of `<word>`, the
/// word with boundary markers, as fastText does. Words shorter than `min` with their markers
/// give no n-gram.
pub fn char_ngram_hashes(word: &str, min: usize, max: usize, mut f: impl FnMut(u64)) {
    let mut buf = String::with_capacity(word.len() + 2);
    buf.push('<');
    buf.push_str(word);
    buf.push('>');
    let bounds: Vec<usize> = buf
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(buf.len()))
        .collect();
    let n_chars = bounds.len() - 1;
    for n in min..=max.min(n_chars) {
        for start in 0..=(n_chars - n) {
            let gram = &buf.as_bytes()[bounds[start]..bounds[start + n]];
            // The whole padded word is already a word feature; skip it to avoid a duplicate.
            if n == n_chars {
                continue;
            }
            f(fnv1a(gram));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        WordTokenizer.tokenize(text, &mut out);
        out
    }

    #[test]
    fn splits_persian_words_and_drops_punctuation() {
        // From the rulings train split (jri-32566), after normalisation.
        assert_eq!(
            tokens("رأی دادگاه بدوی درخصوص دعوی ب . الف . بوکالت"),
            [
                "رأی",
                "دادگاه",
                "بدوی",
                "درخصوص",
                "دعوی",
                "ب",
                "الف",
                "بوکالت"
            ]
        );
        assert_eq!(tokens("«حکم» صادر می‌شود؛"), ["حکم", "صادر", "می‌شود"]);
    }

    #[test]
    fn keeps_numbers_whole() {
        assert_eq!(
            tokens("مورخ 1394/3/27 مبلغ 51/000/000 ریال، 3.5 درصد."),
            [
                "مورخ",
                "1394/3/27",
                "مبلغ",
                "51/000/000",
                "ریال",
                "3.5",
                "درصد"
            ]
        );
        assert_eq!(tokens("ماده 12-13"), ["ماده", "12", "13"]);
    }

    #[test]
    fn zwnj_inside_a_word_stays_at_edges_goes() {
        assert_eq!(tokens("کتاب‌ها \u{200C}را\u{200C}"), ["کتاب‌ها", "را"]);
        assert!(tokens("  ، . ").is_empty());
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn char_ngrams_of_a_persian_word() {
        let mut grams = Vec::new();
        char_ngram_hashes("حکم", 3, 4, |h| grams.push(h));
        // "<حکم>" has 5 chars: three 3-grams, two 4-grams.
        assert_eq!(grams.len(), 5);
        assert_eq!(grams[0], fnv1a("<حک".as_bytes()));
        assert_eq!(grams[4], fnv1a("حکم>".as_bytes()));
        let mut none = Vec::new();
        char_ngram_hashes("", 3, 5, |h| none.push(h));
        assert!(none.is_empty());
    }
}
