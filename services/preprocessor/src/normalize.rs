//! Persian text normalisation for legal rulings and news.
//!
//! [`Normalizer::normalize`] rewrites a text so that spelling variants which mean the same
//! thing become the same string, before tokenisation and feature extraction. The rules are
//! modelled on [hazm](https://github.com/roshan-research/hazm)'s `Normalizer`
//! (`unicodes_replacement`, character refinement, `remove_diacritics`, extra-space cleanup,
//! `affix_spacing`), adapted to the scraped court rulings of `iran-court-rulings` and the
//! Hamshahri news items. Each rule has a switch in [`NormalizerConfig`], which is saved with
//! a trained model so inference reproduces training exactly: **changing any rule here changes
//! what saved models see**, so treat the output of a given configuration as a format.
//!
//! The text goes through at most four passes, in this order:
//!
//! 1. one character pass: `unify_characters`, `unify_digits`, `remove_diacritics` and
//!    `fix_spacing` (whitespace collapse, ZWNJ cleanup, trimming);
//! 2. `split_glued_headings`: a closed list of headings the scraper glued to their neighbours;
//! 3. `space_punctuation`: punctuation becomes its own token, numbers stay whole;
//! 4. `join_affixes`: hazm's affix spacing (`می شود` → `می‌شود`, `کتاب ها` → `کتاب‌ها`, …).
//!
//! Choices that differ from hazm, on purpose:
//!
//! * digits become ASCII `0-9` (hazm writes Persian digits); `٫` `٬` `٪` become `.` `,` `%`;
//! * `ۀ` becomes `ه` + U+0654 (hazm's `هٔ`), so with `remove_diacritics` it ends as plain `ه`,
//!   the spelling most of the corpus uses; `ة` becomes `ه`; `أ إ ؤ ئ ء آ` are kept as they are;
//! * punctuation gets a space on *both* sides (hazm glues `.` to the previous word), so that a
//!   whitespace tokeniser splits it off; `.` `/` `,` `:` `-` between two digits stay, so
//!   `1394/3/27`, `51/000/000`, `3.5` and `12-13` are one token each;
//! * no quotation-mark rewriting, no `...` → `…`, no Persian decimal separator;
//! * a tatweel that is not a kashida (not after a letter, or before a digit) is the scraped
//!   text's dash and becomes `-` instead of disappearing (`1ـ م.`, `کوویدـ۱۹`);
//! * LRM/RLM marks, which the news feed has where a ZWNJ belongs (`دانشگاه‌ها` written with
//!   U+200E), are read as ZWNJ; ZERO WIDTH SPACE is read as a space;
//! * affixes: `می`/`نمی` only join a next word that starts with a letter; the plural list also
//!   has `هایی`; `به که نه چه` never take a suffix (`به تر تیب`); `گر چه` stays apart.
//!
//! With the default configuration (and, on the development data, with every combination of
//! switches) the output is a fixed point: normalising it again returns it unchanged.

use serde::{Deserialize, Serialize};

/// ZERO WIDTH NON-JOINER, the Persian half-space.
const ZWNJ: char = '\u{200C}';
/// ARABIC TATWEEL (kashida), U+0640.
const TATWEEL: char = '\u{0640}';

/// Which normalisation rules run. Saved with a trained model (serde) so inference reproduces
/// training exactly. Every field defaults to `true`; a saved config that lacks a field gets the
/// default for it, and an unknown field is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizerConfig {
    /// Arabic letter variants to their Persian forms: `ي ى ې ۍ` → `ی`, `ك ڪ` → `ک`,
    /// `ة ە ھ ہ ۃ` → `ه`, `ۀ ۂ` → `ه` + U+0654 (`هٔ`), `ٱ` → `ا`; Arabic presentation forms
    /// (U+FB50–U+FBFF, U+FE70–U+FEFC, as NFKC) to plain letters, `ﻻ` → `لا`; the ligatures
    /// U+FDF0–U+FDFD (`ﷲ` → `الله`, `﷼` → `ریال`, …) spelled out; a letter followed by a
    /// combining hamza/madda (U+0653–U+0655) composed (`ا` + U+0654 → `أ`). Hamza forms
    /// `أ إ ؤ ئ ء` and `آ` are kept, as hazm does.
    pub unify_characters: bool,
    /// Persian `۰-۹` and Arabic-Indic `٠-٩` digits to ASCII `0-9`; also the Arabic decimal
    /// separator `٫` → `.`, thousands separator `٬` → `,` and percent sign `٪` → `%`.
    pub unify_digits: bool,
    /// Remove harakat and other Arabic combining marks (U+064B–U+065F, U+0670, U+0610–U+061A,
    /// Quranic marks U+06D6–U+06ED) and the tatweel/kashida U+0640 (`مـحاکم` → `محاکم`,
    /// `بند هـ` → `بند ه`). A tatweel that does not follow a letter, or that stands before a
    /// digit, is the scraped text's dash and becomes `-` (`1ـ م.` → `1- م.`,
    /// `کوویدـ۱۹` → `کووید-۱۹`).
    pub remove_diacritics: bool,
    /// Collapse every run of whitespace (space, tab, NBSP U+00A0, U+2000–U+200B, U+202F,
    /// U+3000, …) to one space, or to one `\n` when the run holds a line break; trim both ends;
    /// drop ZWJ, BOM, soft hyphens, bidi embeddings and control characters; treat LRM/RLM/ALM
    /// as ZWNJ (the scraped news uses them that way); keep a ZWNJ only between two letters or
    /// digits and only one of a run.
    pub fix_spacing: bool,
    /// hazm's affix spacing: `می شود` → `می‌شود`, `نمی کند` → `نمی‌کند`; `کتاب ها` →
    /// `کتاب‌ها` (also `های هایی تر تری ترین گر گری`); `خواسته ی` → `خواسته‌ی`;
    /// `شده اند` → `شده‌اند` (also `ام ایم اش ای اید ات` after a word in `ه`); and
    /// `دادگاههای` → `دادگاه‌های` (`هها` inside a word).
    pub join_affixes: bool,
    /// Put a space on both sides of punctuation (`. ، ؛ : ؟ ! ? , ; « » ( ) [ ] { } " “ ” | / \
    /// - – — … *`) so a whitespace tokeniser splits it off. `. , / : -` between two digits stay
    /// (`1394/3/27`, `51/000/000`, `3.5`, `12-13`), and `. / : -` between two ASCII letters or
    /// digits stay (`COVID-19`, `hamshahrionline.ir`). A run of one repeated mark (`...`,
    /// `**********`) stays one token.
    pub space_punctuation: bool,
    /// Split the section headings, signatures and page trailer that the scraper of the court
    /// rulings glued to their neighbours, e.g. `رأی دادگاه بدویدرخصوص` → `رأی دادگاه بدوی
    /// درخصوص`, `رضویرأی دادگاه تجدیدنظر استاندر` → `رضوی رأی دادگاه تجدیدنظر استان در`,
    /// `میباشدرئیس شعبه` → `میباشد رئیس شعبه`. Only a closed list of phrases is split (see
    /// the module source); other words are never split.
    pub split_glued_headings: bool,
}

impl Default for NormalizerConfig {
    /// Every rule on.
    fn default() -> Self {
        Self {
            unify_characters: true,
            unify_digits: true,
            remove_diacritics: true,
            fix_spacing: true,
            join_affixes: true,
            space_punctuation: true,
            split_glued_headings: true,
        }
    }
}

/// One glued phrase of the scraped rulings, and where to cut around and inside it.
#[derive(Debug, Clone)]
struct GluedPhrase {
    /// The phrase as it appears in the text (the pieces concatenated).
    text: String,
    /// Cut before the phrase when a letter precedes it.
    before: bool,
    /// Cut after the phrase when a letter follows it (unless the letters that follow are only
    /// a suffix in [`SUFFIXES_NOT_SPLIT`]).
    after: bool,
    /// Byte offsets inside `text` where a space goes (between the pieces).
    inner: Vec<usize>,
}

/// The closed list of glued phrases: (pieces, cut before, cut after). Pieces are concatenated
/// in the text and get a space between them. Found in `iran-court-rulings` (train+validation,
/// 701 rulings): the first-instance heading glued to the next word (≈760 times), the appeal
/// heading glued to the judge's name before it and the next word after it (≈700), the page
/// trailer `فهرستدادگاه بدویدادگاه تجدیدنظر استاننقد رأی` glued to the last name (≈700),
/// the first-instance signature `رئیس شعبه` glued to the ruling's last word, the appeal
/// signatures `رئیس و مستشارعلی …` / `مستشار دادگاهمنصوری`, the sub-headings `رای دادگاهدر`
/// and `رای اصلاحیدر`, and the court name typed as `تجدیدنظراستان` (≈320).
const GLUED_PHRASES: &[(&[&str], bool, bool)] = &[
    (&["رأی دادگاه بدوی"], true, true),
    (&["رأی دادگاه تجدیدنظر استان"], true, true),
    (
        &["فهرست", "دادگاه بدوی", "دادگاه تجدیدنظر استان", "نقد رأی"],
        true,
        false,
    ),
    (&["رئیس شعبه"], true, false),
    (&["رییس شعبه"], true, false),
    (&["دادرس شعبه"], true, false),
    (&["رئیس و مستشار"], false, true),
    (&["رییس و مستشار"], false, true),
    (&["مستشار و مستشار"], false, true),
    (&["مستشار دادگاه"], false, true),
    (&["رأی دادگاه", "در"], false, false),
    (&["رای دادگاه", "در"], false, false),
    (&["رأی اصلاحی", "در"], false, false),
    (&["رای اصلاحی", "در"], false, false),
    (&["تجدیدنظر", "استان"], false, false),
    (&["تجدید نظر", "استان"], false, false),
];

/// Letters that may follow a phrase with `after` without being a glued word: they make an
/// inflected form of the phrase's last word (`مستشاران`, `دادگاهها`, `دادگاهی`).
const SUFFIXES_NOT_SPLIT: &[&str] = &["ی", "ها", "های", "هایی", "ان", "ای", "یی"];

/// Persian text normaliser: a [`NormalizerConfig`] plus the tables built from it.
#[derive(Debug, Clone)]
pub struct Normalizer {
    config: NormalizerConfig,
    glued: Vec<GluedPhrase>,
    /// All glued phrases in one automaton: one scan of the text finds every (overlapping)
    /// occurrence, instead of one substring search per phrase.
    glued_search: aho_corasick::AhoCorasick,
}

impl Default for Normalizer {
    /// A normaliser with every rule on.
    fn default() -> Self {
        Self::new(NormalizerConfig::default())
    }
}

impl Normalizer {
    /// Build a normaliser that runs the rules switched on in `config`.
    pub fn new(config: NormalizerConfig) -> Self {
        let glued = GLUED_PHRASES
            .iter()
            .map(|&(pieces, before, after)| {
                let mut text = String::new();
                let mut inner = Vec::new();
                for (i, piece) in pieces.iter().enumerate() {
                    if i > 0 {
                        inner.push(text.len());
                    }
                    text.push_str(piece);
                }
                GluedPhrase {
                    text,
                    before,
                    after,
                    inner,
                }
            })
            .collect::<Vec<GluedPhrase>>();
        // A DFA without prefilter: the phrases' rarest bytes are common UTF-8 lead bytes of
        // Persian letters, so a byte prefilter only adds work.
        // Building fails only past size limits, which sixteen short constant phrases are far from.
        #[allow(clippy::expect_used)]
        let glued_search = aho_corasick::AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .prefilter(false)
            .build(glued.iter().map(|p| p.text.as_str()))
            .expect("a handful of short literal phrases always build an automaton");
        Self {
            config,
            glued,
            glued_search,
        }
    }

    /// The configuration this normaliser runs.
    pub fn config(&self) -> &NormalizerConfig {
        &self.config
    }

    /// Normalise `text` with the configured rules. Empty or whitespace-only input gives `""`
    /// whatever the configuration. Normalising the result again returns it unchanged.
    pub fn normalize(&self, text: &str) -> String {
        if text.trim().is_empty() {
            return String::new();
        }
        let cfg = &self.config;
        let mut s =
            if cfg.unify_characters || cfg.unify_digits || cfg.remove_diacritics || cfg.fix_spacing
            {
                self.character_pass(text)
            } else {
                text.to_owned()
            };
        if cfg.split_glued_headings {
            // A cut can complete another phrase (`رئیس و مستشارو مستشارعلی`), so repeat; each
            // round only adds spaces between letters, so a few rounds reach a fixed point.
            for _ in 0..4 {
                match self.split_glued(&s) {
                    Some(split) => s = split,
                    None => break,
                }
            }
        }
        if cfg.space_punctuation {
            s = space_punctuation(&s);
        }
        if cfg.join_affixes {
            s = join_affixes(&s);
        }
        s
    }

    /// Pass 1: character unification, digits, diacritics and whitespace, in one sweep.
    fn character_pass(&self, text: &str) -> String {
        let mut sink = CharSink {
            cfg: &self.config,
            out: String::with_capacity(text.len()),
            last: None,
            pending_space: None,
            pending_zwnj: false,
            tatweel: None,
        };
        for c in text.chars() {
            sink.push_input(c);
        }
        sink.finish()
    }

    /// Pass 2: insert spaces around and inside the glued phrases. `None` when nothing changes.
    fn split_glued(&self, s: &str) -> Option<String> {
        let mut cuts: Vec<usize> = Vec::new();
        // Overlapping matches too: `رئیس و مستشار و مستشارعلی`.
        for found in self.glued_search.find_overlapping_iter(s) {
            let phrase = &self.glued[found.pattern().as_usize()];
            let pos = found.start();
            if phrase.before
                && s[..pos]
                    .chars()
                    .next_back()
                    .is_some_and(crate::chars::is_alphabetic)
            {
                cuts.push(pos);
            }
            cuts.extend(phrase.inner.iter().map(|&off| pos + off));
            let end = found.end();
            if phrase.after {
                let rest = &s[end..];
                let word = rest
                    .find(|c: char| !crate::chars::is_alphabetic(c))
                    .map_or(rest, |n| &rest[..n]);
                if !word.is_empty() && !SUFFIXES_NOT_SPLIT.contains(&word) {
                    cuts.push(end);
                }
            }
        }
        if cuts.is_empty() {
            return None;
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = String::with_capacity(s.len() + cuts.len());
        let mut start = 0;
        for cut in cuts {
            out.push_str(&s[start..cut]);
            out.push(' ');
            start = cut;
        }
        out.push_str(&s[start..]);
        Some(out)
    }
}

/// State of the character pass: output so far and what is pending at a word gap.
struct CharSink<'c> {
    cfg: &'c NormalizerConfig,
    out: String,
    /// Last character written to `out` (never whitespace when `fix_spacing` is on).
    last: Option<char>,
    /// A whitespace run is open: the one separator (`' '` or `'\n'`) it will become.
    pending_space: Option<char>,
    /// A ZWNJ was seen after a letter; written only if a letter follows.
    pending_zwnj: bool,
    /// A run of tatweel is pending; `Some(true)` when it came right after a letter.
    tatweel: Option<bool>,
}

/// How `fix_spacing` treats a character.
enum SpaceClass {
    /// Whitespace that breaks a line.
    Line,
    /// Any other whitespace, including NBSP and ZERO WIDTH SPACE.
    Blank,
    /// ZWNJ, and the LRM/RLM/ALM marks the news uses in its place.
    Joiner,
    /// Invisible characters that are removed.
    Drop,
    /// Everything else.
    Keep,
}

fn space_class(c: char) -> SpaceClass {
    match c {
        '\n' | '\r' | '\u{000B}' | '\u{000C}' | '\u{0085}' | '\u{2028}' | '\u{2029}' => {
            SpaceClass::Line
        }
        ' '
        | '\t'
        | '\u{00A0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{200B}'
        | '\u{202F}'
        | '\u{205F}'
        | '\u{3000}' => SpaceClass::Blank,
        ZWNJ | '\u{200E}' | '\u{200F}' | '\u{061C}' => SpaceClass::Joiner,
        '\u{200D}'
        | '\u{FEFF}'
        | '\u{00AD}'
        | '\u{180E}'
        | '\u{2060}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => SpaceClass::Drop,
        c if c.is_control() => SpaceClass::Drop,
        _ => SpaceClass::Keep,
    }
}

impl CharSink<'_> {
    /// Stage 1: `unify_characters`.
    fn push_input(&mut self, c: char) {
        if !self.cfg.unify_characters {
            self.push_unified(c);
            return;
        }
        let replacement: &str = match c {
            '\u{064A}' | '\u{0649}' | '\u{06CD}' | '\u{06D0}' => "\u{06CC}",
            '\u{0643}' | '\u{06AA}' => "\u{06A9}",
            '\u{0629}' | '\u{06D5}' | '\u{06C1}' | '\u{06BE}' | '\u{06C3}' => "\u{0647}",
            '\u{06C0}' | '\u{06C2}' => "\u{0647}\u{0654}",
            '\u{0671}' => "\u{0627}",
            '\u{FB50}'..='\u{FBFF}' => table_lookup(&PRESENTATION_FORMS_A, c, 0xFB50),
            '\u{FE70}'..='\u{FEFF}' => table_lookup(&PRESENTATION_FORMS_B, c, 0xFE70),
            '\u{FDF0}'..='\u{FDFD}' => table_lookup(&LIGATURES, c, 0xFDF0),
            _ => "",
        };
        if replacement.is_empty() {
            self.push_unified(c);
        } else {
            for r in replacement.chars() {
                self.push_unified(r);
            }
        }
    }

    /// Stages 2 and 3: `unify_digits`, hamza composition, `remove_diacritics`.
    fn push_unified(&mut self, c: char) {
        let c = if self.cfg.unify_digits {
            unify_digit(c)
        } else {
            c
        };
        if self.cfg.unify_characters && matches!(c, '\u{0653}'..='\u{0655}') && self.compose(c) {
            return;
        }
        if self.cfg.remove_diacritics {
            if c == TATWEEL {
                if self.tatweel.is_none() {
                    let after_letter = self.pending_space.is_none()
                        && self.last.is_some_and(crate::chars::is_alphabetic);
                    self.tatweel = Some(after_letter);
                }
                return;
            }
            if is_diacritic(c) {
                return;
            }
            self.resolve_tatweel(Some(c));
        }
        self.push_char(c);
    }

    /// A pending tatweel run is a kashida (removed) right after a letter, unless a digit
    /// follows; anywhere else the scraped text uses it as a dash (`1ـ م.`, `کوویدـ۱۹`,
    /// `تهران ـ مستشار`), and it becomes `-`.
    fn resolve_tatweel(&mut self, next: Option<char>) {
        if let Some(after_letter) = self.tatweel.take()
            && (!after_letter || next.is_some_and(is_digit))
        {
            self.push_char('-');
        }
    }

    /// Stage 4: `fix_spacing`, or a plain push.
    fn push_char(&mut self, c: char) {
        if self.cfg.fix_spacing {
            self.push_spaced(c);
        } else {
            self.out.push(c);
            self.last = Some(c);
        }
    }

    /// Flush what is pending at the end of the text and return the output.
    fn finish(mut self) -> String {
        self.resolve_tatweel(None);
        self.out
    }

    /// Compose the last letter with a following madda/hamza mark; `false` if they don't pair.
    fn compose(&mut self, mark: char) -> bool {
        if self.pending_space.is_some() || self.pending_zwnj {
            return false;
        }
        let composed = match (self.last, mark) {
            (Some('\u{0627}'), '\u{0653}') => '\u{0622}',
            (Some('\u{0627}'), '\u{0654}') => '\u{0623}',
            (Some('\u{0627}'), '\u{0655}') => '\u{0625}',
            (Some('\u{0648}'), '\u{0654}') => '\u{0624}',
            (Some('\u{06CC}' | '\u{064A}'), '\u{0654}') => '\u{0626}',
            _ => return false,
        };
        self.out.pop();
        self.out.push(composed);
        self.last = Some(composed);
        true
    }

    /// `fix_spacing` proper.
    fn push_spaced(&mut self, c: char) {
        match space_class(c) {
            SpaceClass::Line => {
                if self.last.is_some() {
                    self.pending_space = Some('\n');
                }
                self.pending_zwnj = false;
            }
            SpaceClass::Blank => {
                if self.last.is_some() && self.pending_space.is_none() {
                    self.pending_space = Some(' ');
                }
                self.pending_zwnj = false;
            }
            SpaceClass::Joiner => {
                if self.pending_space.is_none() && self.last.is_some_and(is_word_char) {
                    self.pending_zwnj = true;
                }
            }
            SpaceClass::Drop => {}
            SpaceClass::Keep => {
                if let Some(space) = self.pending_space.take() {
                    self.out.push(space);
                }
                if std::mem::take(&mut self.pending_zwnj) && is_word_char(c) {
                    self.out.push(ZWNJ);
                }
                self.out.push(c);
                self.last = Some(c);
            }
        }
    }
}

fn table_lookup(table: &'static [&'static str], c: char, base: u32) -> &'static str {
    let index = (u32::from(c) - base) as usize;
    table.get(index).copied().unwrap_or("")
}

/// `unify_digits` for one character.
fn unify_digit(c: char) -> char {
    match c {
        '\u{06F0}'..='\u{06F9}' => char::from_digit(u32::from(c) - 0x06F0, 10).unwrap_or(c),
        '\u{0660}'..='\u{0669}' => char::from_digit(u32::from(c) - 0x0660, 10).unwrap_or(c),
        '\u{066B}' => '.',
        '\u{066C}' => ',',
        '\u{066A}' => '%',
        _ => c,
    }
}

/// Marks removed by `remove_diacritics`.
fn is_diacritic(c: char) -> bool {
    matches!(
        c,
        '\u{064B}'..='\u{065F}'
            | '\u{0670}'
            | '\u{0610}'..='\u{061A}'
            | '\u{06D6}'..='\u{06DC}'
            | '\u{06DF}'..='\u{06E8}'
            | '\u{06EA}'..='\u{06ED}'
    )
}

/// A character a ZWNJ may stand next to: letters (with their marks) and digits.
fn is_word_char(c: char) -> bool {
    crate::chars::is_alphanumeric(c)
}

/// A digit in any of the scripts the corpus uses.
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '\u{06F0}'..='\u{06F9}' | '\u{0660}'..='\u{0669}')
}

/// Punctuation that `space_punctuation` separates.
fn is_punct(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | '\u{060C}'
            | ';'
            | '\u{061B}'
            | ':'
            | '!'
            | '?'
            | '\u{061F}'
            | '\u{00AB}'
            | '\u{00BB}'
            | '('
            | ')'
            | '['
            | ']'
            | '{'
            | '}'
            | '"'
            | '\u{201C}'
            | '\u{201D}'
            | '\u{201E}'
            | '|'
            | '/'
            | '\\'
            | '-'
            | '\u{2013}'
            | '\u{2014}'
            | '\u{2026}'
            | '*'
            | '\u{066B}'
            | '\u{066C}'
    )
}

/// Whether punctuation `c` between `prev` and `next` is part of a number or code.
fn keeps_intact(prev: Option<char>, c: char, next: Option<char>) -> bool {
    let (Some(p), Some(n)) = (prev, next) else {
        return false;
    };
    match c {
        '.' | '/' | ':' | '-' => {
            (is_digit(p) && is_digit(n)) || (p.is_ascii_alphanumeric() && n.is_ascii_alphanumeric())
        }
        ',' | '\u{066B}' | '\u{066C}' => is_digit(p) && is_digit(n),
        _ => false,
    }
}

/// Pass 3: a space on both sides of each punctuation run, numbers kept whole.
fn space_punctuation(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    let mut last_out: Option<char> = None;
    let mut prev: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if is_punct(c) && !keeps_intact(prev, c, next) {
            if last_out.is_some_and(|l| !l.is_whitespace() && l != c) {
                out.push(' ');
            }
            out.push(c);
            if next.is_some_and(|n| !n.is_whitespace() && n != c) {
                out.push(' ');
                last_out = Some(' ');
            } else {
                last_out = Some(c);
            }
        } else {
            out.push(c);
            last_out = Some(c);
        }
        prev = Some(c);
    }
    out
}

/// Verbal prefixes joined to the next word.
const VERB_PREFIXES: &[&str] = &["می", "نمی"];
/// Suffixes joined after any word of two or more letters (hazm, plus `هایی`).
const WORD_SUFFIXES: &[&str] = &["ها", "های", "هایی", "تر", "تری", "ترین", "گر", "گری"];
/// Verb endings and clitics joined after a word ending in `ه`.
const HEH_SUFFIXES: &[&str] = &["ام", "ایم", "اش", "اند", "ای", "اید", "ات"];

/// Short function words ending in `ه` that never take these suffixes (`به تر تیب`, `که ای`).
const FUNCTION_WORDS: &[&str] = &["به", "که", "نه", "چه"];

/// Pass 4: hazm's `affix_spacing`, on whitespace-separated tokens.
fn join_affixes(s: &str) -> String {
    let mut tokens: Vec<&str> = Vec::new();
    let mut seps: Vec<char> = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find([' ', '\n']) {
        tokens.push(&rest[..i]);
        seps.push(if rest.as_bytes().get(i) == Some(&b'\n') {
            '\n'
        } else {
            ' '
        });
        rest = &rest[i + 1..];
    }
    tokens.push(rest);

    let mut out = String::with_capacity(s.len() + s.len() / 32);
    let mut word_start = 0;
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            let sep = seps.get(i - 1).copied().unwrap_or(' ');
            let after = tokens.get(i + 1).copied();
            if sep == ' ' && joins(&out[word_start..], token, after) {
                out.push(ZWNJ);
            } else {
                out.push(sep);
                word_start = out.len();
            }
        }
        push_splitting_heh_ha(&mut out, token);
    }
    out
}

/// Whether the gap between the word written so far (`prev`, including earlier joins) and the
/// token `next` closes with a ZWNJ; `after` is the token after `next`, if any.
fn joins(prev: &str, next: &str, after: Option<&str>) -> bool {
    // hazm: (^| )(ن?می)  → می‌, نمی‌ ; here only before a word that starts with a letter.
    if VERB_PREFIXES.contains(&prev) {
        return next
            .chars()
            .next()
            .is_some_and(|c| crate::chars::is_alphabetic(c) && !c.is_ascii());
    }
    if FUNCTION_WORDS.contains(&prev) {
        return false;
    }
    let core = next.trim_end_matches(is_punct);
    // hazm: ([^ ]ه) ی  → ه‌ی (ezafe) and ([^ ]ه) (ا(م|یم|ش|ند|ی|ید|ت)) → ه‌اند, ه‌ای, …
    if (next == "\u{06CC}" && after.is_some()) || HEH_SUFFIXES.contains(&core) {
        return ends_in_heh(prev);
    }
    // hazm: (?<=[^\n\d punct]{2}) (تر(ین?)?|گری?|های?) → ‌تر, ‌ها, …
    if WORD_SUFFIXES.contains(&core) {
        // `گر چه` is the conjunction گرچه, not the suffix -گر.
        if core == "\u{06AF}\u{0631}" && after == Some("\u{0686}\u{0647}") {
            return false;
        }
        let mut back = prev.chars().rev();
        let last = back.next();
        let before = back.next();
        return last.is_some_and(crate::chars::is_alphabetic)
            && before.is_some_and(|b| !b.is_whitespace() && !is_digit(b) && !is_punct(b));
    }
    false
}

/// A word of two or more characters ending in `ه`.
fn ends_in_heh(word: &str) -> bool {
    let mut back = word.chars().rev();
    back.next() == Some('\u{0647}') && back.next().is_some_and(|c| !c.is_whitespace())
}

/// Write `token`, putting a ZWNJ into `هها` inside it (`دادگاههای` → `دادگاه‌های`).
fn push_splitting_heh_ha(out: &mut String, token: &str) {
    const HEH_HEH_ALEF: &str = "\u{0647}\u{0647}\u{0627}";
    let mut rest = token;
    let mut at_start = true;
    // A char search first (memchr) and the rest by comparison: a substring search would set up
    // its searcher again for every token.
    let find = |s: &str| {
        s.match_indices('\u{0647}')
            .map(|(i, _)| i)
            .find(|&i| s[i..].starts_with(HEH_HEH_ALEF))
    };
    while let Some(i) = find(rest) {
        let cut = i + '\u{0647}'.len_utf8();
        out.push_str(&rest[..cut]);
        if i > 0 || !at_start {
            out.push(ZWNJ);
        }
        rest = &rest[cut..];
        at_start = false;
    }
    out.push_str(rest);
}

/// Spelled-out forms of the ligatures U+FDF0..=U+FDFD, as hazm writes them.
const LIGATURES: [&str; 14] = [
    "صلی",
    "قلی",
    "الله",
    "اکبر",
    "محمد",
    "صلعم",
    "رسول",
    "علیه",
    "وسلم",
    "صلی",
    "صلی الله علیه وسلم",
    "جل جلاله",
    "ریال",
    "بسم الله الرحمن الرحیم",
];

/// Replacements for U+FB50..=U+FBFF (Arabic Presentation Forms-A, letter part), indexed by `code point - 0xFB50`;
/// `""` means "no replacement". Generated from Unicode NFKC, then mapped to Persian letters.
const PRESENTATION_FORMS_A: [&str; 176] = [
    "\u{0627}",
    "\u{0627}",
    "\u{067B}",
    "\u{067B}",
    "\u{067B}",
    "\u{067B}",
    "\u{067E}",
    "\u{067E}",
    "\u{067E}",
    "\u{067E}",
    "\u{0680}",
    "\u{0680}",
    "\u{0680}",
    "\u{0680}",
    "\u{067A}",
    "\u{067A}",
    "\u{067A}",
    "\u{067A}",
    "\u{067F}",
    "\u{067F}",
    "\u{067F}",
    "\u{067F}",
    "\u{0679}",
    "\u{0679}",
    "\u{0679}",
    "\u{0679}",
    "\u{06A4}",
    "\u{06A4}",
    "\u{06A4}",
    "\u{06A4}",
    "\u{06A6}",
    "\u{06A6}",
    "\u{06A6}",
    "\u{06A6}",
    "\u{0684}",
    "\u{0684}",
    "\u{0684}",
    "\u{0684}",
    "\u{0683}",
    "\u{0683}",
    "\u{0683}",
    "\u{0683}",
    "\u{0686}",
    "\u{0686}",
    "\u{0686}",
    "\u{0686}",
    "\u{0687}",
    "\u{0687}",
    "\u{0687}",
    "\u{0687}",
    "\u{068D}",
    "\u{068D}",
    "\u{068C}",
    "\u{068C}",
    "\u{068E}",
    "\u{068E}",
    "\u{0688}",
    "\u{0688}",
    "\u{0698}",
    "\u{0698}",
    "\u{0691}",
    "\u{0691}",
    "\u{06A9}",
    "\u{06A9}",
    "\u{06A9}",
    "\u{06A9}",
    "\u{06AF}",
    "\u{06AF}",
    "\u{06AF}",
    "\u{06AF}",
    "\u{06B3}",
    "\u{06B3}",
    "\u{06B3}",
    "\u{06B3}",
    "\u{06B1}",
    "\u{06B1}",
    "\u{06B1}",
    "\u{06B1}",
    "\u{06BA}",
    "\u{06BA}",
    "\u{06BB}",
    "\u{06BB}",
    "\u{06BB}",
    "\u{06BB}",
    "\u{0647}\u{0654}",
    "\u{0647}\u{0654}",
    "\u{0647}",
    "\u{0647}",
    "\u{0647}",
    "\u{0647}",
    "\u{0647}",
    "\u{0647}",
    "\u{0647}",
    "\u{0647}",
    "\u{06D2}",
    "\u{06D2}",
    "\u{06D3}",
    "\u{06D3}",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "\u{06AD}",
    "\u{06AD}",
    "\u{06AD}",
    "\u{06AD}",
    "\u{06C7}",
    "\u{06C7}",
    "\u{06C6}",
    "\u{06C6}",
    "\u{06C8}",
    "\u{06C8}",
    "\u{06C7}\u{0674}",
    "\u{06CB}",
    "\u{06CB}",
    "\u{06C5}",
    "\u{06C5}",
    "\u{06C9}",
    "\u{06C9}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{0626}\u{0627}",
    "\u{0626}\u{0627}",
    "\u{0626}\u{0647}",
    "\u{0626}\u{0647}",
    "\u{0626}\u{0648}",
    "\u{0626}\u{0648}",
    "\u{0626}\u{06C7}",
    "\u{0626}\u{06C7}",
    "\u{0626}\u{06C6}",
    "\u{0626}\u{06C6}",
    "\u{0626}\u{06C8}",
    "\u{0626}\u{06C8}",
    "\u{0626}\u{06CC}",
    "\u{0626}\u{06CC}",
    "\u{0626}\u{06CC}",
    "\u{0626}\u{06CC}",
    "\u{0626}\u{06CC}",
    "\u{0626}\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
];

/// Replacements for U+FE70..=U+FEFF (Arabic Presentation Forms-B), indexed by `code point - 0xFE70`;
/// `""` means "no replacement". Generated from Unicode NFKC, then mapped to Persian letters.
const PRESENTATION_FORMS_B: [&str; 144] = [
    "\u{064B}",
    "\u{064B}",
    "\u{064C}",
    "",
    "\u{064D}",
    "",
    "\u{064E}",
    "\u{064E}",
    "\u{064F}",
    "\u{064F}",
    "\u{0650}",
    "\u{0650}",
    "\u{0651}",
    "\u{0651}",
    "\u{0652}",
    "\u{0652}",
    "\u{0621}",
    "\u{0622}",
    "\u{0622}",
    "\u{0623}",
    "\u{0623}",
    "\u{0624}",
    "\u{0624}",
    "\u{0625}",
    "\u{0625}",
    "\u{0626}",
    "\u{0626}",
    "\u{0626}",
    "\u{0626}",
    "\u{0627}",
    "\u{0627}",
    "\u{0628}",
    "\u{0628}",
    "\u{0628}",
    "\u{0628}",
    "\u{0647}",
    "\u{0647}",
    "\u{062A}",
    "\u{062A}",
    "\u{062A}",
    "\u{062A}",
    "\u{062B}",
    "\u{062B}",
    "\u{062B}",
    "\u{062B}",
    "\u{062C}",
    "\u{062C}",
    "\u{062C}",
    "\u{062C}",
    "\u{062D}",
    "\u{062D}",
    "\u{062D}",
    "\u{062D}",
    "\u{062E}",
    "\u{062E}",
    "\u{062E}",
    "\u{062E}",
    "\u{062F}",
    "\u{062F}",
    "\u{0630}",
    "\u{0630}",
    "\u{0631}",
    "\u{0631}",
    "\u{0632}",
    "\u{0632}",
    "\u{0633}",
    "\u{0633}",
    "\u{0633}",
    "\u{0633}",
    "\u{0634}",
    "\u{0634}",
    "\u{0634}",
    "\u{0634}",
    "\u{0635}",
    "\u{0635}",
    "\u{0635}",
    "\u{0635}",
    "\u{0636}",
    "\u{0636}",
    "\u{0636}",
    "\u{0636}",
    "\u{0637}",
    "\u{0637}",
    "\u{0637}",
    "\u{0637}",
    "\u{0638}",
    "\u{0638}",
    "\u{0638}",
    "\u{0638}",
    "\u{0639}",
    "\u{0639}",
    "\u{0639}",
    "\u{0639}",
    "\u{063A}",
    "\u{063A}",
    "\u{063A}",
    "\u{063A}",
    "\u{0641}",
    "\u{0641}",
    "\u{0641}",
    "\u{0641}",
    "\u{0642}",
    "\u{0642}",
    "\u{0642}",
    "\u{0642}",
    "\u{06A9}",
    "\u{06A9}",
    "\u{06A9}",
    "\u{06A9}",
    "\u{0644}",
    "\u{0644}",
    "\u{0644}",
    "\u{0644}",
    "\u{0645}",
    "\u{0645}",
    "\u{0645}",
    "\u{0645}",
    "\u{0646}",
    "\u{0646}",
    "\u{0646}",
    "\u{0646}",
    "\u{0647}",
    "\u{0647}",
    "\u{0647}",
    "\u{0647}",
    "\u{0648}",
    "\u{0648}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{06CC}",
    "\u{0644}\u{0622}",
    "\u{0644}\u{0622}",
    "\u{0644}\u{0623}",
    "\u{0644}\u{0623}",
    "\u{0644}\u{0625}",
    "\u{0644}\u{0625}",
    "\u{0644}\u{0627}",
    "\u{0644}\u{0627}",
    "",
    "",
    "",
];

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! Every input below is copied from the development data (`../shared/data` beside the
    //! repository: `iran-court-rulings/*.jsonl` ids `jri-…`, `hamshahri-rss-topics/*.jsonl`
    //! ids `hamshahri-…`), field `text`, unless a comment says how it was altered.

    use super::*;

    /// A config with every rule off.
    fn all_off() -> NormalizerConfig {
        NormalizerConfig {
            unify_characters: false,
            unify_digits: false,
            remove_diacritics: false,
            fix_spacing: false,
            join_affixes: false,
            space_punctuation: false,
            split_glued_headings: false,
        }
    }

    /// A normaliser running only the rules that `set` switches on.
    fn only(set: impl FnOnce(&mut NormalizerConfig)) -> Normalizer {
        let mut config = all_off();
        set(&mut config);
        Normalizer::new(config)
    }

    /// A normaliser running every rule except the ones that `unset` switches off.
    fn all_but(unset: impl FnOnce(&mut NormalizerConfig)) -> Normalizer {
        let mut config = NormalizerConfig::default();
        unset(&mut config);
        Normalizer::new(config)
    }

    fn check(n: &Normalizer, cases: &[(&str, &str)]) {
        for &(input, expected) in cases {
            assert_eq!(n.normalize(input), expected, "input: {input:?}");
        }
    }

    #[test]
    fn unify_characters_maps_arabic_forms_to_persian() {
        let n = only(|c| c.unify_characters = true);
        check(
            &n,
            &[
                // hamshahri-news-502296: Arabic presentation forms (U+FB58, U+FE8D, U+FEAD, …).
                (
                    "جلسه شوﺭﺍی ﭘﻮﻝ ﻭ ﺍﻋﺘﺒﺎﺭ انجام شد.",
                    "جلسه شورای پول و اعتبار انجام شد.",
                ),
                // jri-25898: teh marbuta.
                (
                    "تهران است.رئیس شعبة 208 دادگاه حقوقی تهران",
                    "تهران است.رئیس شعبه 208 دادگاه حقوقی تهران",
                ),
                // jri-30985: teh marbuta.
                (
                    "دادگاه با احراز رابطة زوجیت و نظر به این که",
                    "دادگاه با احراز رابطه زوجیت و نظر به این که",
                ),
                // hamshahri-news-504006: heh with yeh above becomes heh + hamza above.
                (
                    "پیراهن اسطورۀ بسکتبال جهان ۲۱۶ هزار دلار",
                    "پیراهن اسطوره\u{0654} بسکتبال جهان ۲۱۶ هزار دلار",
                ),
                // jri-32643, re-spelled with Arabic yeh U+064A and kaf U+0643 as text copied
                // from Arabic-keyboard sources has them (the development data has none).
                (
                    "لذا تقاضاي صدور حكم به شرح خواسته را دارد",
                    "لذا تقاضای صدور حکم به شرح خواسته را دارد",
                ),
                // jri-32643, with alef maksura U+0649 and a decomposed alef + hamza above.
                (
                    "قرار رد دعوى وی را صادر و اعلام می نماید. را\u{0654}ی صادره",
                    "قرار رد دعوی وی را صادر و اعلام می نماید. رأی صادره",
                ),
            ],
        );
        // Hamza forms are kept (jri-32566, hamshahri-news-504365).
        check(
            &n,
            &[
                ("قانون ائین دادرسی مدنی", "قانون ائین دادرسی مدنی"),
                ("رأی دادگاه تجدیدنظر", "رأی دادگاه تجدیدنظر"),
                ("نمایندهٔ منتخب دوره یازدهم", "نمایندهٔ منتخب دوره یازدهم"),
            ],
        );
    }

    #[test]
    fn unify_characters_can_be_switched_off() {
        let n = all_but(|c| c.unify_characters = false);
        // jri-25898
        assert_eq!(
            n.normalize("رئیس شعبة 208 دادگاه حقوقی تهران"),
            "رئیس شعبة 208 دادگاه حقوقی تهران"
        );
        // hamshahri-news-502296
        assert_eq!(n.normalize("جلسه شوﺭﺍی ﭘﻮﻝ"), "جلسه شوﺭﺍی ﭘﻮﻝ");
    }

    #[test]
    fn unify_digits_maps_persian_and_arabic_digits_to_ascii() {
        let n = only(|c| c.unify_digits = true);
        check(
            &n,
            &[
                // hamshahri-news-506529: Arabic-Indic ١١ and Persian ۴ in one number.
                (
                    "دانشگاه\u{200c}ها در ١١۴ شهر سفید صحت دارد؟",
                    "دانشگاه\u{200c}ها در 114 شهر سفید صحت دارد؟",
                ),
                // hamshahri-news-504916 (the double space is the source's).
                (
                    "کاهش ۸۷.۸ درصدی  معاملات مسکن در تهران",
                    "کاهش 87.8 درصدی  معاملات مسکن در تهران",
                ),
                // hamshahri-news-496543
                (
                    "کاهش ۶۲ درصدی سفرها در ۱۵ روز گذشته",
                    "کاهش 62 درصدی سفرها در 15 روز گذشته",
                ),
            ],
        );
    }

    #[test]
    fn unify_digits_can_be_switched_off() {
        let n = all_but(|c| c.unify_digits = false);
        // hamshahri-news-506529
        assert_eq!(
            n.normalize("در ١١۴ شهر سفید صحت دارد؟"),
            "در ١١۴ شهر سفید صحت دارد ؟"
        );
    }

    #[test]
    fn remove_diacritics_removes_harakat_and_tatweel() {
        let n = only(|c| c.remove_diacritics = true);
        check(
            &n,
            &[
                // hamshahri-news-502472: shadda.
                ("به صحّت محتوا یا ارقام", "به صحت محتوا یا ارقام"),
                // jri-32643: tanwin.
                ("مستنداً به ماده 15 قانون", "مستندا به ماده 15 قانون"),
                // hamshahri-news-503792: kasra.
                ("«گِنگ شوانگ» سخنگوی", "«گنگ شوانگ» سخنگوی"),
                // hamshahri-news-503359: kashida between letters.
                (
                    "۶ ویژگی افراد خـوشحال در روزهـای کرونایی",
                    "۶ ویژگی افراد خوشحال در روزهای کرونایی",
                ),
                // jri-32729: tatweel showing the letter ه on its own.
                ("مستنداً به بند هـ ماده 348", "مستندا به بند ه ماده 348"),
                // jri-479: tatweel used as a dash after a number.
                (
                    "در خصوص دعوی 1ـ م. 2ـ الف. 3ـ ج.",
                    "در خصوص دعوی 1- م. 2- الف. 3- ج.",
                ),
                // hamshahri-news-503907: tatweel as a dash before a number.
                (
                    "احتمال ابتلای بیماران کوویدـ۱۹ به «سندروم گیلن باره»",
                    "احتمال ابتلای بیماران کووید-۱۹ به «سندروم گیلن باره»",
                ),
                // jri-1158: tatweel as a dash between spaces.
                (
                    "دادگاه تجدیدنظر تهران ـ مستشار دادگاهمنصوری ـ جعفری شهنی",
                    "دادگاه تجدیدنظر تهران - مستشار دادگاهمنصوری - جعفری شهنی",
                ),
            ],
        );
    }

    #[test]
    fn remove_diacritics_can_be_switched_off() {
        let n = all_but(|c| c.remove_diacritics = false);
        // hamshahri-news-502472, hamshahri-news-503359
        assert_eq!(n.normalize("به صحّت محتوا"), "به صحّت محتوا");
        assert_eq!(n.normalize("افراد خـوشحال"), "افراد خـوشحال");
    }

    #[test]
    fn fix_spacing_collapses_whitespace_and_cleans_zwnj() {
        let n = only(|c| c.fix_spacing = true);
        check(
            &n,
            &[
                // hamshahri-news-496543: NBSP.
                (
                    "در ۱۵ روز گذشته |\u{a0}۹۰ هزار خودرو از آغاز",
                    "در ۱۵ روز گذشته | ۹۰ هزار خودرو از آغاز",
                ),
                // hamshahri-news-496543, with spaces and a blank line added around the line
                // break between title and lead: one line break is kept.
                (
                    "اجتماعی برگردانده شدند \r\n\n جانشین رئیس پلیس راه",
                    "اجتماعی برگردانده شدند\nجانشین رئیس پلیس راه",
                ),
                // hamshahri-news-497417: double space.
                (
                    "صدا و سیما  فرکانس ٣ سال است",
                    "صدا و سیما فرکانس ٣ سال است",
                ),
                // hamshahri-news-502472: ZWNJ before a space.
                (
                    "قرائت گزارش هیچ\u{200c} تردیدی به",
                    "قرائت گزارش هیچ تردیدی به",
                ),
                // hamshahri-news-500848: ZWNJ after a space; ZWNJ + LRM.
                ("به این شعر- \u{200c} در هر سطحی", "به این شعر- در هر سطحی"),
                (
                    "انجام می\u{200c}\u{200e}دهند، با این هنر",
                    "انجام می\u{200c}دهند، با این هنر",
                ),
                // hamshahri-news-502685: LRM used in place of ZWNJ.
                (
                    "مدارس، دانشگاه\u{200e}ها، اماکن مقدس",
                    "مدارس، دانشگاه\u{200c}ها، اماکن مقدس",
                ),
                // jri-32528: ZERO WIDTH SPACE between two words.
                (
                    "مستشار و مستشار\u{200b}سید محمد فاضل حسینی",
                    "مستشار و مستشار سید محمد فاضل حسینی",
                ),
                // jri-32643, with the surrounding whitespace of a copied field.
                (
                    " \t رأی صادره ظرف بیست روز قابل اعتراض \r\n",
                    "رأی صادره ظرف بیست روز قابل اعتراض",
                ),
            ],
        );
    }

    #[test]
    fn fix_spacing_can_be_switched_off() {
        let n = all_but(|c| c.fix_spacing = false);
        // hamshahri-news-497417
        assert_eq!(n.normalize("صدا و سیما  فرکانس"), "صدا و سیما  فرکانس");
        // hamshahri-news-496543
        assert_eq!(n.normalize("گذشته |\u{a0}۹۰ هزار"), "گذشته |\u{a0}90 هزار");
    }

    #[test]
    fn join_affixes_follows_hazm_affix_spacing() {
        let n = only(|c| c.join_affixes = true);
        check(
            &n,
            &[
                // jri-32643: ezafe ی after ه; می, نمی.
                (
                    "به طرفیت ظ. ح.ز. به خواسته ی تقسیط محکوم به دادنامه",
                    "به طرفیت ظ. ح.ز. به خواسته\u{200c}ی تقسیط محکوم به دادنامه",
                ),
                (
                    "معامله تجاری محسوب می شود و از انجا که",
                    "معامله تجاری محسوب می\u{200c}شود و از انجا که",
                ),
                (
                    "دادخواست اعسار از تجار پذیرفته نمی شود و ماده 2",
                    "دادخواست اعسار از تجار پذیرفته نمی\u{200c}شود و ماده 2",
                ),
                // jri-32566: plural های.
                (
                    "صرفا مربوط به پرونده های ارجاعی ازسوی مراجع قضایی است.",
                    "صرفا مربوط به پرونده\u{200c}های ارجاعی ازسوی مراجع قضایی است.",
                ),
                // jri-33420: plural ها; هها inside a word.
                (
                    "به طرفیت آقایان و خانم ها 1- ح. 2- ر.",
                    "به طرفیت آقایان و خانم\u{200c}ها 1- ح. 2- ر.",
                ),
                (
                    "قانون آیین دادرسی دادگاههای عمومی وانقلاب",
                    "قانون آیین دادرسی دادگاه\u{200c}های عمومی وانقلاب",
                ),
                // jri-33409: اند after ه.
                (
                    "را گواهی نموده اند لذا دعوی به نحو صحیح",
                    "را گواهی نموده\u{200c}اند لذا دعوی به نحو صحیح",
                ),
                // jri-32566: ای after ه.
                (
                    "از حیث روند دادرسی نیز خدشه ای مترتب بر ان نیست",
                    "از حیث روند دادرسی نیز خدشه\u{200c}ای مترتب بر ان نیست",
                ),
                // jri-31392: گر; jri-31720: تر.
                (
                    "شرکت سهامی بیمه ایران به عنوان بیمه گر وانعقاد",
                    "شرکت سهامی بیمه ایران به عنوان بیمه\u{200c}گر وانعقاد",
                ),
                (
                    "به جهت این مطالبات که بیش تر از وجه چک است",
                    "به جهت این مطالبات که بیش\u{200c}تر از وجه چک است",
                ),
            ],
        );
        // Left alone: the conjunction گر چه (jri-32487), به before a word (hamshahri-news-503276).
        check(
            &n,
            &[
                (
                    "و ا ظهارات گواه دیگر نیز گر چه در هنگام تنظیم",
                    "و ا ظهارات گواه دیگر نیز گر چه در هنگام تنظیم",
                ),
                (
                    "در ایام ماه مبارک رمضان، به ترتیب ۲۵، ۲۰ و ۲۴ هزار تومان",
                    "در ایام ماه مبارک رمضان، به ترتیب ۲۵، ۲۰ و ۲۴ هزار تومان",
                ),
            ],
        );
    }

    #[test]
    fn join_affixes_can_be_switched_off() {
        let n = all_but(|c| c.join_affixes = false);
        // jri-32643, jri-33420
        assert_eq!(
            n.normalize("معامله تجاری محسوب می شود"),
            "معامله تجاری محسوب می شود"
        );
        assert_eq!(
            n.normalize("دادرسی دادگاههای عمومی"),
            "دادرسی دادگاههای عمومی"
        );
    }

    #[test]
    fn space_punctuation_splits_marks_but_keeps_numbers() {
        let n = only(|c| c.space_punctuation = true);
        check(
            &n,
            &[
                // jri-32643: sentence glued to the signature; dash glued to a word.
                (
                    "استان تهران می باشد.رئیس شعبه 211 دادگاه حقوقی تهران- هادی رضوی",
                    "استان تهران می باشد . رئیس شعبه 211 دادگاه حقوقی تهران - هادی رضوی",
                ),
                // jri-32566: initials.
                (
                    "دعوی ب. الف. بوکالت ح. ف.پ. بطرفیت ع.الف. الف. بخواسته",
                    "دعوی ب . الف . بوکالت ح . ف . پ . بطرفیت ع . الف . الف . بخواسته",
                ),
                // jri-33420: brackets.
                (
                    "تسلیم مبیع( تحویل مورد معامله ) مالی غیرمنقول ( تقاضای",
                    "تسلیم مبیع ( تحویل مورد معامله ) مالی غیرمنقول ( تقاضای",
                ),
                // hamshahri-news-506529 (NBSPs are the source's).
                (
                    "صحت دارد؟ | سطح رعایت پروتکل\u{200c}ها بهداشتی در تهران پایین است\nرئیس کمیته امنیتی، اجتماعی و انتظامی ستاد ملی مقابله با\u{a0}بیماری کرونا گفت:\u{a0}موضوع",
                    "صحت دارد ؟ | سطح رعایت پروتکل\u{200c}ها بهداشتی در تهران پایین است\nرئیس کمیته امنیتی ، اجتماعی و انتظامی ستاد ملی مقابله با\u{a0}بیماری کرونا گفت :\u{a0}موضوع",
                ),
                // hamshahri-news-503792: guillemets.
                ("قلب\n«گِنگ شوانگ» سخنگوی", "قلب\n« گِنگ شوانگ » سخنگوی"),
            ],
        );
        // Numbers, dates, amounts and masked digits stay one token.
        check(
            &n,
            &[
                // jri-32566
                (
                    "دادنامه 78942 مورخ 1394/3/27 موضوع پرونده کلاسه 69/94 حوزه 4601",
                    "دادنامه 78942 مورخ 1394/3/27 موضوع پرونده کلاسه 69/94 حوزه 4601",
                ),
                ("وموضوع مواد 12-13 که شورا", "وموضوع مواد 12-13 که شورا"),
                (
                    "نسبت به دادنامه شماره 1677-94/12/24 شعبه 185",
                    "نسبت به دادنامه شماره 1677-94/12/24 شعبه 185",
                ),
                // jri-33420
                (
                    "مقوم به 51/000/000 ارزش منطقه ای ملک 36/000/000 ریال",
                    "مقوم به 51/000/000 ارزش منطقه ای ملک 36/000/000 ریال",
                ),
                // hamshahri-news-504916: Persian digits with a decimal point.
                ("کاهش ۸۷.۸ درصدی", "کاهش ۸۷.۸ درصدی"),
                // jri-31441: a run of one mark stays one token.
                (
                    "کارت ملی بشماره ********** مورخ 1358/1/15 - وکالت",
                    "کارت ملی بشماره ********** مورخ 1358/1/15 - وکالت",
                ),
                // hamshahri-news-496981: decimal point kept, full stop split off.
                (
                    "تردد در محورهای برون شهری ۲۰.۵ درصد کاهش یافته است.",
                    "تردد در محورهای برون شهری ۲۰.۵ درصد کاهش یافته است .",
                ),
                // hamshahri-news-503539: dots as thousands separators.
                (
                    "خودروهای داخلی | تیبا ۸۷.۰۰۰.۰۰۰ تومان",
                    "خودروهای داخلی | تیبا ۸۷.۰۰۰.۰۰۰ تومان",
                ),
            ],
        );
    }

    #[test]
    fn space_punctuation_can_be_switched_off() {
        let n = all_but(|c| c.space_punctuation = false);
        // jri-32566
        assert_eq!(
            n.normalize("دعوی ب. الف. بوکالت ح. ف.پ."),
            "دعوی ب. الف. بوکالت ح. ف.پ."
        );
    }

    #[test]
    fn split_glued_headings_splits_the_closed_list() {
        let n = only(|c| c.split_glued_headings = true);
        check(
            &n,
            &[
                // jri-32566: first-instance heading.
                (
                    "رأی دادگاه بدویدرخصوص دعوی ب. الف. بوکالت",
                    "رأی دادگاه بدوی درخصوص دعوی ب. الف. بوکالت",
                ),
                // jri-32566: signature glued to the ruling; appeal heading glued both ways.
                (
                    "استان تهران میباشدرئیس شعبه 185 دادگاه عمومی تهران -سعدی نیک بخشرأی دادگاه تجدیدنظر استانپیرامون تجدیدنظرخواهی آقای ب. الف.",
                    "استان تهران میباشد رئیس شعبه 185 دادگاه عمومی تهران -سعدی نیک بخش رأی دادگاه تجدیدنظر استان پیرامون تجدیدنظرخواهی آقای ب. الف.",
                ),
                // jri-32566: appeal signature and page trailer.
                (
                    "شعبه 28 دادگاه تجدیدنظر استان تهران - رئیس و مستشارقاسم توکلی - رمضان نامدارفهرستدادگاه بدویدادگاه تجدیدنظر استاننقد رأی",
                    "شعبه 28 دادگاه تجدیدنظر استان تهران - رئیس و مستشار قاسم توکلی - رمضان نامدار فهرست دادگاه بدوی دادگاه تجدیدنظر استان نقد رأی",
                ),
                // jri-31476: a cut that completes a second phrase.
                (
                    "استان تهران - رئیس و مستشارو مستشاراحمد کرمی - رسول امیری",
                    "استان تهران - رئیس و مستشار و مستشار احمد کرمی - رسول امیری",
                ),
                // jri-1158
                (
                    "تهران ـ مستشار دادگاهمنصوری ـ جعفری شهنیفهرستدادگاه بدویدادگاه تجدیدنظر استاننقد رأی",
                    "تهران ـ مستشار دادگاه منصوری ـ جعفری شهنی فهرست دادگاه بدوی دادگاه تجدیدنظر استان نقد رأی",
                ),
                // jri-31349: two headings in a row, then a sub-heading.
                (
                    "تهران-سامان آقالارثالثرأی دادگاه تجدیدنظر استانرأی دادگاهدر این پرونده، برابر",
                    "تهران-سامان آقالارثالث رأی دادگاه تجدیدنظر استان رأی دادگاه در این پرونده، برابر",
                ),
                // jri-31341
                (
                    "رأی دادگاه بدویرای دادگاهدرخصوص دعوی م. ص.",
                    "رأی دادگاه بدوی رای دادگاه درخصوص دعوی م. ص.",
                ),
                // jri-32528
                (
                    "قطعی است .شعبه اول دادگاه تجدیدنظراستان تهران - مستشار",
                    "قطعی است .شعبه اول دادگاه تجدیدنظر استان تهران - مستشار",
                ),
            ],
        );
        // Never split: plural مستشاران (jri-486), the phrase inside a sentence (jri-1156),
        // words that merely start like a heading's last word (jri-29724).
        check(
            &n,
            &[
                (
                    "رأی صادره قطعی است.مستشاران شعبه 10 دادگاه تجدیدنظر استان تهرانحسین خانی",
                    "رأی صادره قطعی است.مستشاران شعبه 10 دادگاه تجدیدنظر استان تهرانحسین خانی",
                ),
                (
                    "راجع به نقض رأی دادگاه بدوی از جهت عدم تمکین",
                    "راجع به نقض رأی دادگاه بدوی از جهت عدم تمکین",
                ),
                (
                    "متهم هر سال رعایت استانداردهای مقررات ساختمان را",
                    "متهم هر سال رعایت استانداردهای مقررات ساختمان را",
                ),
            ],
        );
    }

    #[test]
    fn split_glued_headings_can_be_switched_off() {
        let n = all_but(|c| c.split_glued_headings = false);
        // jri-32566
        assert_eq!(
            n.normalize("رأی دادگاه بدویدرخصوص دعوی"),
            "رأی دادگاه بدویدرخصوص دعوی"
        );
    }

    #[test]
    fn default_config_runs_every_rule() {
        let n = Normalizer::default();
        assert_eq!(n.config(), &NormalizerConfig::default());
        // jri-32643, opening of the text.
        assert_eq!(
            n.normalize(
                "رأی دادگاه بدویدر خصوص دعوی ر. حاج زینعلی فرزند ع. به طرفیت ظ. ح.ز. به خواسته ی تقسیط محکوم به دادنامه 93000490 بدین شرح که خواهان اظهار نموده که توانایی پرداخت نقدی محکوم به موصوف را نداشته لذا تقاضای صدور حکم به شرح خواسته را دارد . با توجه به محتویات پرونده و اذعان صریح خواهان در جلسه مورخ 91/11/7 مبنی بر اینکه"
            ),
            "رأی دادگاه بدوی در خصوص دعوی ر . حاج زینعلی فرزند ع . به طرفیت ظ . ح . ز . به خواسته\u{200c}ی تقسیط محکوم به دادنامه 93000490 بدین شرح که خواهان اظهار نموده که توانایی پرداخت نقدی محکوم به موصوف را نداشته لذا تقاضای صدور حکم به شرح خواسته را دارد . با توجه به محتویات پرونده و اذعان صریح خواهان در جلسه مورخ 91/11/7 مبنی بر اینکه"
        );
        // hamshahri-news-506529, whole text.
        assert_eq!(
            n.normalize(
                "بازگشایی مدارس و دانشگاه\u{200c}ها در ١١۴ شهر سفید صحت دارد؟ | سطح رعایت پروتکل\u{200c}ها بهداشتی در تهران پایین است\nرئیس کمیته امنیتی، اجتماعی و انتظامی ستاد ملی مقابله با\u{a0}بیماری کرونا گفت:\u{a0}موضوع بازگشایی مدارس و دانشگاه\u{200c}ها در ١١۴ شهر کم خطر و سفید کشور اصلا مطرح نیست."
            ),
            "بازگشایی مدارس و دانشگاه\u{200c}ها در 114 شهر سفید صحت دارد ؟ | سطح رعایت پروتکل\u{200c}ها بهداشتی در تهران پایین است\nرئیس کمیته امنیتی ، اجتماعی و انتظامی ستاد ملی مقابله با بیماری کرونا گفت : موضوع بازگشایی مدارس و دانشگاه\u{200c}ها در 114 شهر کم خطر و سفید کشور اصلا مطرح نیست ."
        );
        // jri-1158, signature and trailer: dash tatweel, glued names.
        assert_eq!(
            n.normalize(
                "رأی صادره قطعی است.رئیس شعبه 23 دادگاه تجدیدنظر تهران ـ مستشار دادگاهمنصوری ـ جعفری شهنیفهرستدادگاه بدویدادگاه تجدیدنظر استاننقد رأی"
            ),
            "رأی صادره قطعی است . رئیس شعبه 23 دادگاه تجدیدنظر تهران - مستشار دادگاه منصوری - جعفری شهنی فهرست دادگاه بدوی دادگاه تجدیدنظر استان نقد رأی"
        );
    }

    #[test]
    fn empty_and_whitespace_only_input_gives_empty_string() {
        for input in ["", " ", "\n\t \u{a0}\r\n", "\u{200c}", " \u{200b}\u{200e} "] {
            assert_eq!(Normalizer::default().normalize(input), "", "{input:?}");
        }
        for input in ["", "  \n\u{a0}"] {
            assert_eq!(Normalizer::new(all_off()).normalize(input), "", "{input:?}");
        }
    }

    #[test]
    fn all_rules_off_returns_the_input() {
        // hamshahri-news-500848
        let text = "انجام می\u{200c}\u{200e}دهند، با این هنر محشورند.";
        assert_eq!(Normalizer::new(all_off()).normalize(text), text);
    }

    #[test]
    fn normalize_is_idempotent_on_real_texts() {
        let texts = [
            // jri-32566, opening and closing of the ruling.
            "رأی دادگاه بدویدرخصوص دعوی ب. الف. بوکالت ح. ف.پ. بطرفیت ع.الف. الف. بخواسته ابطال گزارش اصلاحی شماره دادنامه 78942 مورخ 1394/3/27 موضوع پرونده کلاسه 69/94 حوزه 4601 شورای حل اختلاف منطقه 17 تهران به دلیل صدور از مرجع فاقد صلاحیت باستناد گزارش اصلاحی 69/4601/94 مورخ 94/3/27 ووکالتنامه وکیل با عنایت به اینکه اولا گزارش اصلاحی نسبت به سه فقره دادنامه 356/93و357/93و358/93 که هریک در صلاحیت شورا بوده",
            "این رای قطعی است.شعبه 28 دادگاه تجدیدنظر استان تهران - رئیس و مستشارقاسم توکلی - رمضان نامدارفهرستدادگاه بدویدادگاه تجدیدنظر استاننقد رأی",
            // jri-33420
            "به خواسته الزام به تنظیم سند رسمی ملک (الزام به تنظیم سند رسمی شش دانگ پلاک های ثبتی 521الی 527 و374الی 384 و تمام لواحق آن مقوم به 51/000/000 ارزش منطقه ای ملک 36/000/000 ریال الزام به فک رهن مقوم به 51/000/000 ریال ارش منطقه ای ملک 36/000/000 ریال تسلیم مبیع( تحویل مورد معامله ) مالی غیرمنقول",
            // jri-479
            "رأی دادگاه بدویدر خصوص دعوی 1ـ م. 2ـ الف. 3ـ ج. 4ـ ش. همگی م. ورثه مرحوم ف.م. 5ـ م.6ـ ج. 7ـ ",
            // jri-31476
            "صادره قطعی است.شعبه 3 دادگاه تجدیدنظر استان تهران - رئیس و مستشارو مستشاراحمد کرمی - رسول امیری- سلیمان حیدری حویقفهرستدادگاه بدویدادگاه تجدیدنظر استاننقد رأی",
            // hamshahri-news-500848
            "سوءتفاهم چاوشی و دوستانش | مناقشه\u{200c}ای که خواننده پاپ با انتشار شعرهایی به نام خود برانگیخت\nموضوع انتشار شعرهایی که نام محسن چاوشی، خواننده پاپ را به عنوان شاعر پای خود دارند، بسیاری را به واکنش واداشت. در میان کسانی که به این شعر- \u{200c} در هر سطحی از موضع\u{200c}گیری انتقادی- نقد دارند، بیشترین سهم از آن کسانی است که خود یا شاعرند و بی\u{200c}واسطه با جهان شعر سرو کار دارند یا به واسطه کارهایی که در حوزه ادبیات انتقادی انجام می\u{200c}\u{200e}دهند، با این هنر محشورند.",
            // hamshahri-news-496543
            "کاهش ۶۲ درصدی سفرها در ۱۵ روز گذشته |\u{a0}۹۰ هزار خودرو از آغاز فاصله\u{200c}گذاری اجتماعی برگردانده شدند\nجانشین رئیس پلیس راه راهور ناجا گفت: در سه روز گذشته از اجرای طرح کاهش فاصله اجتماعی همکاران بنده از ادامه سفر ۹۰ هزار راننده جلوگیری کرده\u{200c}اند.",
            // hamshahri-news-502296
            "جلسه شوﺭﺍی ﭘﻮﻝ ﻭ ﺍﻋﺘﺒﺎﺭ انجام شد.",
        ];
        let n = Normalizer::default();
        for text in texts {
            let once = n.normalize(text);
            assert_eq!(n.normalize(&once), once, "{text:?}");
        }
    }

    #[test]
    fn config_round_trips_and_rejects_unknown_fields() {
        let config = NormalizerConfig {
            join_affixes: false,
            ..NormalizerConfig::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        let back: NormalizerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        // A missing field takes its default (true).
        let partial: NormalizerConfig = serde_json::from_str(r#"{"unify_digits": false}"#).unwrap();
        assert_eq!(
            partial,
            NormalizerConfig {
                unify_digits: false,
                ..NormalizerConfig::default()
            }
        );
        assert!(serde_json::from_str::<NormalizerConfig>(r#"{"lowercase": true}"#).is_err());
        assert_eq!(Normalizer::new(config.clone()).config(), &config);
    }
}
