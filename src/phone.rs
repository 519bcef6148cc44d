//! Normalize stage: any accepted spelling of a number -> E.164, its country and its type (mobile, fixed
//! line, premium rate...), with the `phonenumber` crate's metadata deciding what is valid. Also the one place
//! that masks numbers for logs.

use phonenumber::{country, Mode};
use std::fmt;

/// A validated number in E.164 form.
#[derive(Clone, PartialEq, Eq)]
pub struct Phone {
    e164: String,
    /// The E.164 digits as an integer (at most 15 digits, so it fits): a compact limiter key.
    digits: u64,
    calling_code: u16,
    country: Option<country::Id>,
    kind: NumberType,
}

/// What kind of line a valid number is, as the metadata says (`phonenumber::Type`), plus `Satellite`: a
/// number the metadata calls mobile but that belongs to no country (the global calling codes +870, +881,
/// +882, +883: Inmarsat, Iridium, Thuraya, maritime and in-flight networks). A valid number always has one
/// of these; the metadata's other types (short codes, emergency) never validate as E.164 numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberType {
    Mobile,
    /// Regions such as the US, where the number itself does not tell fixed lines from mobiles.
    FixedLineOrMobile,
    FixedLine,
    TollFree,
    PremiumRate,
    SharedCost,
    Voip,
    PersonalNumber,
    Pager,
    /// Universal access ("company") numbers.
    Uan,
    Voicemail,
    Satellite,
}

impl NumberType {
    pub(crate) const ALL: [NumberType; 12] = [
        NumberType::Mobile,
        NumberType::FixedLineOrMobile,
        NumberType::FixedLine,
        NumberType::TollFree,
        NumberType::PremiumRate,
        NumberType::SharedCost,
        NumberType::Voip,
        NumberType::PersonalNumber,
        NumberType::Pager,
        NumberType::Uan,
        NumberType::Voicemail,
        NumberType::Satellite,
    ];

    /// The name the config, logs and `explain` use (`premium_rate`).
    pub fn as_str(self) -> &'static str {
        match self {
            NumberType::Mobile => "mobile",
            NumberType::FixedLineOrMobile => "fixed_line_or_mobile",
            NumberType::FixedLine => "fixed_line",
            NumberType::TollFree => "toll_free",
            NumberType::PremiumRate => "premium_rate",
            NumberType::SharedCost => "shared_cost",
            NumberType::Voip => "voip",
            NumberType::PersonalNumber => "personal_number",
            NumberType::Pager => "pager",
            NumberType::Uan => "uan",
            NumberType::Voicemail => "voicemail",
            NumberType::Satellite => "satellite",
        }
    }

    pub fn from_name(name: &str) -> Option<NumberType> {
        NumberType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The metadata's type for a number of `country` (None: a global calling code). None for the types a
    /// valid number cannot have.
    fn classify(kind: phonenumber::Type, country: Option<country::Id>) -> Option<NumberType> {
        use phonenumber::Type;
        Some(match kind {
            Type::Mobile if country.is_none() => NumberType::Satellite,
            Type::Mobile => NumberType::Mobile,
            Type::FixedLineOrMobile => NumberType::FixedLineOrMobile,
            Type::FixedLine => NumberType::FixedLine,
            Type::TollFree => NumberType::TollFree,
            Type::PremiumRate => NumberType::PremiumRate,
            Type::SharedCost => NumberType::SharedCost,
            Type::Voip => NumberType::Voip,
            Type::PersonalNumber => NumberType::PersonalNumber,
            Type::Pager => NumberType::Pager,
            Type::Uan => NumberType::Uan,
            Type::Voicemail => NumberType::Voicemail,
            Type::Emergency
            | Type::ShortCode
            | Type::StandardRate
            | Type::Carrier
            | Type::NoInternational
            | Type::Unknown => return None,
        })
    }
}

impl fmt::Display for NumberType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The number could not be read as a valid phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPhone;

/// Longest input we hand to the parser; real numbers with spacing are far shorter.
const MAX_INPUT: usize = 40;

impl Phone {
    /// Logto's HTTP SMS connector sends the country code and digits without `+` (`8613800138000`).
    pub fn from_logto(to: &str) -> Result<Phone, InvalidPhone> {
        let to = to.trim();
        let digits = to.strip_prefix('+').unwrap_or(to);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidPhone);
        }
        Phone::parse_international(digits)
    }

    /// The native API: `+…` or `00…` is international; anything else is read in `default_country`, and is
    /// invalid without one.
    pub fn from_native(text: &str, default_country: Option<country::Id>) -> Result<Phone, InvalidPhone> {
        // Digits and the usual separators only: the parser would otherwise dig a number out of any text.
        if text.len() > MAX_INPUT || !text.chars().all(|c| c.is_ascii_digit() || " +-().\u{a0}".contains(c)) {
            return Err(InvalidPhone);
        }
        let compact: String = text.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '\u{a0}')).collect();
        if let Some(rest) = compact.strip_prefix('+').or_else(|| compact.strip_prefix("00")) {
            return Phone::parse_international(rest);
        }
        match default_country {
            Some(country) => Phone::parse_in(Some(country), &compact),
            None => Err(InvalidPhone),
        }
    }

    /// Parses an E.164 number (`+` and digits), as the Lua hook or a test would write it.
    pub fn from_e164(text: &str) -> Result<Phone, InvalidPhone> {
        match text.strip_prefix('+') {
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Phone::parse_international(digits),
            _ => Err(InvalidPhone),
        }
    }

    fn parse_international(digits: &str) -> Result<Phone, InvalidPhone> {
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidPhone);
        }
        if let Some(phone) = fast::parse(digits) {
            return Ok(phone);
        }
        Phone::parse_in(None, &format!("+{digits}"))
    }

    fn parse_in(country: Option<country::Id>, text: &str) -> Result<Phone, InvalidPhone> {
        if text.is_empty() || text.len() > MAX_INPUT {
            return Err(InvalidPhone);
        }
        cache::get_or_parse(country, text, Phone::parse_uncached)
    }

    fn parse_uncached(country: Option<country::Id>, text: &str) -> Result<Phone, InvalidPhone> {
        let number = phonenumber::parse(country, text).map_err(|_| InvalidPhone)?;
        if number.extension().is_some() {
            return Err(InvalidPhone);
        }
        // `phonenumber::is_valid` is exactly "the type is not Unknown": asking for the type validates too,
        // with the same regular expressions, so knowing the type costs the parser nothing.
        let region = number.country().id();
        let kind =
            NumberType::classify(number.number_type(&phonenumber::metadata::DATABASE), region).ok_or(InvalidPhone)?;
        let e164 = number.format().mode(Mode::E164).to_string();
        let digits = e164[1..].parse().map_err(|_| InvalidPhone)?;
        Ok(Phone { digits, calling_code: number.code().value(), country: region, e164, kind })
    }

    /// Loads the number metadata now rather than on the first request.
    pub fn warm_up() {
        let _ = Phone::from_e164("+8613800138000");
    }

    pub fn e164(&self) -> &str {
        &self.e164
    }

    pub fn digits(&self) -> u64 {
        self.digits
    }

    #[cfg(test)]
    fn calling_code(&self) -> u16 {
        self.calling_code
    }

    pub fn country(&self) -> Option<country::Id> {
        self.country
    }

    /// ISO 3166 alpha-2 code of the number's region, or `ZZ` when the metadata names none.
    pub(crate) fn country_code(&self) -> &str {
        self.country.as_ref().map(|c| c.as_ref()).unwrap_or("ZZ")
    }

    /// Mobile, fixed line, premium rate...: what the tenant's `number_types` allow or refuse.
    pub fn number_type(&self) -> NumberType {
        self.kind
    }

    /// Mainland China numbers (+86) take Tencent's domestic templates.
    pub(crate) fn is_mainland_china(&self) -> bool {
        self.calling_code == 86
    }

    /// The first `n` digits of the E.164 number as an integer.
    pub fn prefix(&self, n: u8) -> u64 {
        let len = self.e164.len() - 1;
        let drop = len.saturating_sub(n as usize) as u32;
        self.digits / 10u64.pow(drop)
    }

    /// A form fit for logs: `+86138****8000`.
    pub fn masked(&self) -> Masked<'_> {
        Masked(&self.e164)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

/// A direct check of E.164 digits against the metadata, for the common case where the `phonenumber` parser
/// would only split off the country calling code: a calling code with one region, a national number the
/// region's national-prefix rules leave untouched. It answers only "valid" (with the same E.164 form and
/// region the parser gives) or "ask the parser", never "invalid", so every other number takes the full
/// parser. The parser's cost is its regular expressions behind one global mutex and LRU cache (a SipHash
/// of the pattern text per match); here each region's patterns are compiled once into a single anchored
/// regex per descriptor, held without a lock. It also gives the number's type by the parser's own rules
/// (`phonenumber::validator::number_type`). `tests::fast_path_agrees_with_the_parser` holds the two equal.
mod fast {
    use super::{NumberType, Phone};
    use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
    use regex::{Regex, RegexBuilder};
    use std::sync::OnceLock;

    /// One region's checks: what `phonenumber::is_valid` asks of a national number, and when the parser
    /// would rewrite it.
    struct Region {
        calling_code: u16,
        country: phonenumber::country::Id,
        national_prefix: Option<String>,
        /// `national_prefix_for_parsing`, anchored: where it matches, the parser may strip or transform.
        strips: Option<Regex>,
        general: Check,
        /// Every number type `is_valid` accepts, in the order `number_type` tries them (premium rate first,
        /// fixed line and mobile last): valid when one matches, and the first match is the type.
        kinds: Vec<(NumberType, Check)>,
        /// The mobile descriptor, to tell a fixed-line match from a fixed-line-or-mobile one.
        mobile: Option<Check>,
        /// The metadata writes the same pattern for fixed lines and mobiles: every fixed-line match is
        /// fixed-line-or-mobile.
        fixed_is_mobile: bool,
    }

    /// A descriptor as `Descriptor::is_match` reads it: a possible length, and a match at the start.
    struct Check {
        lengths: Vec<u16>,
        pattern: Regex,
    }

    impl Check {
        fn new(descriptor: &Descriptor) -> Option<Check> {
            Some(Check {
                lengths: descriptor.possible_length().to_vec(),
                pattern: anchored(descriptor.national_number().as_str())?,
            })
        }

        fn matches(&self, national: &str) -> bool {
            (self.lengths.is_empty() || self.lengths.contains(&(national.len() as u16)))
                && self.pattern.is_match(national)
        }
    }

    /// The metadata's patterns are written in verbose syntax and matched at the start (not the end).
    fn anchored(pattern: &str) -> Option<Regex> {
        RegexBuilder::new(&format!("^(?:{pattern}\n)")).ignore_whitespace(true).build().ok()
    }

    impl Region {
        fn new(meta: &Metadata) -> Option<Region> {
            let d = meta.descriptors();
            let kinds = [
                (NumberType::PremiumRate, d.premium_rate()),
                (NumberType::TollFree, d.toll_free()),
                (NumberType::SharedCost, d.shared_cost()),
                (NumberType::Voip, d.voip()),
                (NumberType::PersonalNumber, d.personal_number()),
                (NumberType::Pager, d.pager()),
                (NumberType::Uan, d.uan()),
                (NumberType::Voicemail, d.voicemail()),
                (NumberType::FixedLine, d.fixed_line()),
                (NumberType::Mobile, d.mobile()),
            ];
            let pattern = |desc: Option<&Descriptor>| desc.map(|d| d.national_number().as_str().to_owned());
            Some(Region {
                calling_code: meta.country_code(),
                country: meta.id().parse().ok()?,
                national_prefix: meta.national_prefix().map(str::to_owned),
                strips: match meta.national_prefix_for_parsing() {
                    Some(re) => Some(anchored(re.as_str())?),
                    None => None,
                },
                general: Check::new(d.general())?,
                kinds: kinds
                    .into_iter()
                    .filter_map(|(kind, desc)| desc.map(|desc| Check::new(desc).map(|check| (kind, check))))
                    .collect::<Option<_>>()?,
                mobile: match d.mobile() {
                    Some(desc) => Some(Check::new(desc)?),
                    None => None,
                },
                fixed_is_mobile: pattern(d.fixed_line()) == pattern(d.mobile()),
            })
        }

        /// The number's type when it is valid as the parser would find it and left as is by the parser's
        /// national-prefix rules; None sends it to the parser.
        fn accepts(&self, national: &str) -> Option<NumberType> {
            let plain = !national.starts_with('0')
                && self.national_prefix.as_deref().is_none_or(|p| !national.starts_with(p))
                && self.strips.as_ref().is_none_or(|re| !re.is_match(national))
                && self.general.matches(national);
            if !plain {
                return None;
            }
            let (kind, _) = self.kinds.iter().find(|(_, check)| check.matches(national))?;
            Some(match kind {
                NumberType::FixedLine
                    if self.fixed_is_mobile || self.mobile.as_ref().is_some_and(|m| m.matches(national)) =>
                {
                    NumberType::FixedLineOrMobile
                }
                // A single-region calling code always names a country, so a mobile here is never `Satellite`.
                kind => *kind,
            })
        }
    }

    /// What the metadata holds for one calling code.
    enum Slot {
        Unassigned,
        /// Several regions share the code, or it is non-geographic (`001`): the parser decides.
        Other,
        Single(Region),
    }

    /// Calling codes are 1 to 3 digits: one slot per code, filled on first use.
    fn slot(code: usize) -> &'static Slot {
        static SLOTS: OnceLock<Vec<OnceLock<Slot>>> = OnceLock::new();
        let slots = SLOTS.get_or_init(|| (0..1000).map(|_| OnceLock::new()).collect());
        slots[code].get_or_init(|| match DATABASE.by_code(&(code as u16)).as_deref() {
            None | Some([]) => Slot::Unassigned,
            Some([meta]) if meta.id() != "001" => Region::new(meta).map_or(Slot::Other, Slot::Single),
            Some(_) => Slot::Other,
        })
    }

    /// `digits`: E.164 without the `+`, already checked to be 1 to 15 ASCII digits.
    pub(super) fn parse(digits: &str) -> Option<Phone> {
        if digits.starts_with('0') {
            return None;
        }
        for split in 1..=3.min(digits.len() - 1) {
            let code: usize = digits[..split].parse().ok()?;
            let region = match slot(code) {
                Slot::Unassigned => continue,
                Slot::Other => return None,
                Slot::Single(region) => region,
            };
            let kind = region.accepts(&digits[split..])?;
            return Some(Phone {
                e164: format!("+{digits}"),
                digits: digits.parse().ok()?,
                calling_code: region.calling_code,
                country: Some(region.country),
                kind,
            });
        }
        None
    }
}

/// Recently parsed inputs. The metadata-driven parser costs several microseconds (regular expressions), the
/// largest single cost of a denied request; floods and retries repeat the same few numbers. Bounded: it is
/// emptied when full, so a spray of distinct numbers costs one parse each and no memory growth.
mod cache {
    use super::{InvalidPhone, Phone};
    use phonenumber::country;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    const CAPACITY: usize = 16 * 1024;

    type Key = (Option<country::Id>, Box<str>);
    type Cache = Mutex<HashMap<Key, Result<Phone, InvalidPhone>, foldhash::fast::RandomState>>;

    fn cache() -> &'static Cache {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        CACHE.get_or_init(Default::default)
    }

    pub(super) fn get_or_parse(
        country: Option<country::Id>,
        text: &str,
        parse: fn(Option<country::Id>, &str) -> Result<Phone, InvalidPhone>,
    ) -> Result<Phone, InvalidPhone> {
        let key: Key = (country, text.into());
        if let Some(hit) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return hit.clone();
        }
        let parsed = parse(country, text);
        let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert(key, parsed.clone());
        parsed
    }
}

/// Displays a number with its middle digits hidden.
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if !s.is_ascii() || s.len() < 8 {
            return f.write_str("****");
        }
        // Hide at least four digits, keep the country and operator prefix and the last digits.
        let tail = if s.len() >= 12 { 4 } else { 2 };
        let head = (s.len() - tail - 4).min(6);
        write!(f, "{}****{}", &s[..head], &s[s.len() - tail..])
    }
}

/// Masks every run of 7 or more digits in free text (log lines a script writes, error details), keeping
/// the first three and last two digits: `call +86 138 0013 8000` -> `call +86****00`. A run may contain
/// single spaces, dots and hyphens between digits, as people write numbers. An IPv4 address or prefix
/// (`198.51.100.7`, `198.51.100.`: two to four dot-separated groups of at most three digits, each at most
/// 255) is no number and stays as it is.
pub(crate) fn mask_numbers(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let starts =
            bytes[i].is_ascii_digit() || (bytes[i] == b'+' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        let mut digits: Vec<u8> = Vec::new();
        if bytes[i].is_ascii_digit() {
            digits.push(bytes[i]);
        }
        // Whether the run reads as an IPv4 address: dots only, groups of 1 to 3 digits up to 255.
        let mut ip_like = bytes[i] != b'+';
        let (mut groups, mut group) = (1, if ip_like { u32::from(bytes[i] - b'0') } else { 0 });
        let mut group_len = usize::from(bytes[i] != b'+');
        while end < bytes.len() {
            if bytes[end].is_ascii_digit() {
                digits.push(bytes[end]);
                group = group.saturating_mul(10).saturating_add(u32::from(bytes[end] - b'0'));
                group_len += 1;
                ip_like &= group_len <= 3 && group <= 255;
                end += 1;
            } else if matches!(bytes[end], b' ' | b'-' | b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
                ip_like &= bytes[end] == b'.';
                (groups, group, group_len) = (groups + 1, 0, 0);
                end += 1;
            } else {
                break;
            }
        }
        ip_like &= (2..=4).contains(&groups);
        if digits.len() >= 7 && !ip_like {
            out.push_str(&text[copied..start]);
            if bytes[start] == b'+' {
                out.push('+');
            }
            out.push_str(std::str::from_utf8(&digits[..3]).unwrap_or_default());
            out.push_str("****");
            out.push_str(std::str::from_utf8(&digits[digits.len() - 2..]).unwrap_or_default());
            copied = end;
        }
        i = end;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::country::Id;

    #[test]
    fn regression_logto_digits_only_number() {
        // Logto's HTTP SMS connector sends the country code without `+`.
        let p = Phone::from_logto("8613800138000").unwrap();
        assert_eq!(p.e164(), "+8613800138000");
        assert_eq!(p.country(), Some(Id::CN));
        let us = Phone::from_logto("14155550100").unwrap();
        assert_eq!(us.e164(), "+14155550100");
        assert_eq!(us.country(), Some(Id::US));
        assert_eq!(us.calling_code(), 1);
    }

    #[test]
    fn native_forms() {
        let cn = Some(Id::CN);
        for text in ["13800138000", "+8613800138000", "0086 138 0013 8000", "+86 138-0013-8000", "008613800138000"] {
            let p = Phone::from_native(text, cn).unwrap_or_else(|_| panic!("{text}"));
            assert_eq!(p.e164(), "+8613800138000", "{text}");
            assert!(p.is_mainland_china());
        }
        assert_eq!(Phone::from_native("+14155550100", None).unwrap().e164(), "+14155550100");
        assert_eq!(Phone::from_native("+14155550100", cn).unwrap().country_code(), "US");
    }

    #[test]
    fn bare_numbers_need_a_default_country() {
        assert_eq!(Phone::from_native("13800138000", None), Err(InvalidPhone));
    }

    #[test]
    fn garbage_is_invalid() {
        for text in [
            "",
            "abc",
            "+",
            "garbage-13911112222",
            "tel:+8613800138000",
            "+86138001380OO",
            "12",
            "+86138",
            "+8613800138000123456",
            "1380013800x",
            "+86 1380013800012",
        ] {
            assert_eq!(Phone::from_native(text, Some(Id::CN)), Err(InvalidPhone), "{text}");
        }
        for to in ["", "86-138", "+", "0", "861380013800", "x8613800138000", &"8".repeat(200)] {
            assert_eq!(Phone::from_logto(to), Err(InvalidPhone), "{to}");
        }
        assert_eq!(Phone::from_native(&"1".repeat(500), Some(Id::CN)), Err(InvalidPhone));
    }

    /// The fast path must give exactly what the parser gives wherever it answers, number type included:
    /// every region's example numbers for every number type, and random digit changes, truncations and
    /// extensions of them.
    #[test]
    fn fast_path_agrees_with_the_parser() {
        use phonenumber::metadata::DATABASE;
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut fast_answers, mut compared) = (0, 0);
        let mut types_seen = std::collections::HashSet::new();
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
            let examples = [d.general(), d.mobile().unwrap_or(d.general()), d.fixed_line().unwrap_or(d.general())]
                .into_iter()
                .chain(
                    [
                        d.premium_rate(),
                        d.toll_free(),
                        d.shared_cost(),
                        d.voip(),
                        d.personal_number(),
                        d.pager(),
                        d.uan(),
                        d.voicemail(),
                    ]
                    .into_iter()
                    .flatten(),
                )
                .filter_map(|desc| desc.example());
            for example in examples {
                let base = format!("{}{example}", meta.country_code());
                let mut candidates =
                    vec![base.clone(), format!("{base}{}", rng.u8(0..10)), base[..base.len() - 1].to_owned()];
                for _ in 0..20 {
                    let mut bytes = base.clone().into_bytes();
                    for _ in 0..rng.usize(1..3) {
                        let at = rng.usize(1..bytes.len());
                        bytes[at] = b'0' + rng.u8(0..10);
                    }
                    candidates.push(String::from_utf8(bytes).unwrap());
                }
                for digits in candidates.iter().filter(|c| (2..=15).contains(&c.len())) {
                    compared += 1;
                    if let Some(fast) = fast::parse(digits) {
                        fast_answers += 1;
                        let slow = Phone::parse_uncached(None, &format!("+{digits}"));
                        assert_eq!(slow.as_ref(), Ok(&fast), "+{digits}");
                        let slow = slow.unwrap();
                        assert_eq!(
                            (slow.calling_code, slow.number_type(), slow.e164),
                            (fast.calling_code, fast.number_type(), fast.e164.clone()),
                            "+{digits}"
                        );
                        types_seen.insert(fast.number_type());
                    }
                }
            }
        }
        eprintln!("fast path answered {fast_answers} of {compared}; types {types_seen:?}");
        // The comparison means something only if the fast path answers for a good share of numbers, of
        // every type a single-region calling code can have (satellite numbers have no region).
        assert!(fast_answers * 4 > compared, "fast path answered {fast_answers} of {compared}");
        for kind in NumberType::ALL.into_iter().filter(|k| *k != NumberType::Satellite) {
            assert!(types_seen.contains(&kind), "no {kind} number took the fast path");
        }
        assert_eq!(fast::parse("8613800138000").map(|p| p.e164), Some("+8613800138000".to_owned()));
        // Shared calling codes and leading zeros are left to the parser.
        assert!(fast::parse("14155550100").is_none() && fast::parse("390236618300").is_none());
    }

    /// The kinds SMS pumping targets are told apart from mobiles, by the fast path and the parser alike.
    #[test]
    fn number_types_of_well_known_ranges() {
        for (number, kind) in [
            ("+8613800138000", NumberType::Mobile),
            ("+14155550100", NumberType::FixedLineOrMobile),
            ("+447400123456", NumberType::Mobile),
            ("+442079460000", NumberType::FixedLine),
            ("+19005550100", NumberType::PremiumRate),
            ("+18005550100", NumberType::TollFree),
            ("+8816123456789", NumberType::Satellite),
            ("+870773111632", NumberType::Satellite),
            ("+441134960000", NumberType::FixedLine),
            ("+443003030000", NumberType::Uan),
            ("+448081570000", NumberType::TollFree),
            ("+449098790000", NumberType::PremiumRate),
            ("+861082123456", NumberType::FixedLine),
        ] {
            let phone = Phone::from_e164(number).unwrap_or_else(|_| panic!("{number}"));
            assert_eq!(phone.number_type(), kind, "{number}");
            let parsed = Phone::parse_uncached(None, number).unwrap();
            assert_eq!(parsed.number_type(), kind, "{number} by the parser");
        }
        for kind in NumberType::ALL {
            assert_eq!(NumberType::from_name(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn compact_forms() {
        let p = Phone::from_e164("+8613800138000").unwrap();
        assert_eq!(p.digits(), 8613800138000);
        assert_eq!(p.prefix(5), 86138);
        assert_eq!(p.prefix(20), 8613800138000);
        assert_eq!(p.masked().to_string(), "+86138****8000");
        assert_eq!(Phone::from_e164("+14155550100").unwrap().masked().to_string(), "+141****0100");
        assert_eq!(Masked("+4930123").to_string(), "+4****23");
    }

    #[test]
    fn free_text_masks_long_digit_runs_only() {
        assert_eq!(mask_numbers("call +8613800138000 now"), "call +861****00 now");
        assert_eq!(mask_numbers("call +86 138-0013-8000."), "call +861****00.");
        assert_eq!(mask_numbers("x.lua:12: code 123456 at 10:30"), "x.lua:12: code 123456 at 10:30");
        assert_eq!(mask_numbers("13800138000"), "138****00");
        assert_eq!(mask_numbers("no digits"), "no digits");
        // Issue 19: IPs were logged as `198****00.`; they are no numbers.
        assert_eq!(mask_numbers("from 198.51.100.7 and 198.51.100."), "from 198.51.100.7 and 198.51.100.");
        assert_eq!(mask_numbers("ip=203.0.113.255"), "ip=203.0.113.255");
        assert_eq!(mask_numbers("call 138.0013.8000"), "call 138****00");
        assert_eq!(mask_numbers("call 415.555.0100 or 999.123.456.7"), "call 415****00 or 999****67");
        assert_eq!(mask_numbers("+86.138.001.380"), "+861****80");
    }
}
