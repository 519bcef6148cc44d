//! Lua 5.4's pattern matcher, ported from `lstrlib.c` (Lua 5.4.8, MIT licence, Copyright © 1994–2025
//! Lua.org, PUC-Rio) so that every step it takes is paid for: C's matcher backtracks exponentially on
//! patterns such as `a?a?…aaa…b` and cannot be interrupted, so the sandbox's `string.find`, `match`,
//! `gmatch` and `gsub` run this one instead. Same semantics, same error messages (a differential test
//! runs both on a corpus); the only addition is `Fuel`, drawn before each step and refused when the
//! call's budget or deadline is spent.

/// Captures per pattern (`LUA_MAXCAPTURES`).
pub(crate) const MAX_CAPTURES: usize = 32;
/// Nesting depth of `match` (`MAXCCALLS` in lstrlib.c).
const MAX_DEPTH: usize = 200;
const ESC: u8 = b'%';
const SPECIALS: &[u8] = b"^$*+?.([%-";
/// Steps a matcher draws from the budget at a time (what it did not use is given back).
const FUEL_CHUNK: u64 = 4096;

/// Why matching stopped without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The budget or the deadline ran out (the `Fuel` says which).
    Spent,
    /// A malformed pattern or capture, worded as lstrlib.c words it.
    Error(String),
}

/// Where matching steps come from: the call's budget.
pub(crate) trait Fuel {
    /// Up to `want` more steps (at least one), or `Stop::Spent`.
    fn draw(&mut self, want: u64) -> Result<u64, Stop>;
    /// Steps drawn but not used.
    fn refund(&mut self, steps: u64);
}

#[derive(Debug, Clone, Copy)]
enum CapLen {
    Unfinished,
    Position,
    Len(usize),
}

#[derive(Debug, Clone, Copy)]
struct Capture {
    init: usize,
    len: CapLen,
}

/// One capture of a successful match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Captured {
    /// `src[start..end]`.
    Span(usize, usize),
    /// A position capture `()`: 1-based.
    Position(usize),
}

/// The state of one match (lstrlib.c's `MatchState`) over `src` with `pat`.
pub(crate) struct Matcher<'a, F: Fuel> {
    src: &'a [u8],
    pat: &'a [u8],
    depth: usize,
    level: usize,
    captures: [Capture; MAX_CAPTURES],
    fuel: &'a mut F,
    steps: u64,
}

/// Whether `pat` has no magic character, so a plain search finds what matching would (`nospecials`).
pub(crate) fn no_specials(pat: &[u8]) -> bool {
    // strpbrk stops at each NUL, but lstrlib.c goes on past it: every byte is looked at.
    !pat.iter().any(|b| SPECIALS.contains(b))
}

impl<'a, F: Fuel> Matcher<'a, F> {
    pub(super) fn new(src: &'a [u8], pat: &'a [u8], fuel: &'a mut F) -> Matcher<'a, F> {
        Matcher {
            src,
            pat,
            depth: MAX_DEPTH,
            level: 0,
            captures: [Capture { init: 0, len: CapLen::Unfinished }; MAX_CAPTURES],
            fuel,
            steps: 0,
        }
    }

    /// Matches the pattern from `pat_start` (past a `^` anchor) at `s`: the end of the match, if any.
    /// Captures of the last successful call are read with [`Matcher::capture`].
    pub(crate) fn match_at(&mut self, s: usize, pat_start: usize) -> Result<Option<usize>, Stop> {
        self.level = 0;
        self.depth = MAX_DEPTH;
        self.do_match(s, pat_start)
    }

    /// Number of captures the last match made (0: the whole match is the only one).
    pub(super) fn levels(&self) -> usize {
        self.level
    }

    /// Capture `i` of the last match over `s..e` (`get_onecapture`): the whole match when the pattern
    /// has no captures and `i == 0`.
    pub(super) fn capture(&self, i: usize, s: usize, e: usize) -> Result<Captured, Stop> {
        if i >= self.level {
            if i != 0 {
                return Err(Stop::Error(format!("invalid capture index %{}", i + 1)));
            }
            return Ok(Captured::Span(s, e));
        }
        let c = self.captures[i];
        match c.len {
            CapLen::Unfinished => Err(Stop::Error("unfinished capture".into())),
            CapLen::Position => Ok(Captured::Position(c.init + 1)),
            CapLen::Len(l) => Ok(Captured::Span(c.init, c.init + l)),
        }
    }

    /// Steps used so far that were drawn from the fuel.
    pub(super) fn finish(self) {
        self.fuel.refund(self.steps);
    }

    #[inline]
    fn step(&mut self) -> Result<(), Stop> {
        if self.steps == 0 {
            self.steps = self.fuel.draw(FUEL_CHUNK)?;
        }
        self.steps -= 1;
        Ok(())
    }

    /// Pays for `n` steps at once (a scan of `n` bytes).
    fn steps_for(&mut self, n: usize) -> Result<(), Stop> {
        let mut n = n as u64;
        while n > 0 {
            if self.steps == 0 {
                self.steps = self.fuel.draw(n.max(FUEL_CHUNK))?;
            }
            let take = n.min(self.steps);
            self.steps -= take;
            n -= take;
        }
        Ok(())
    }

    /// The pattern byte at `i`, or 0 past its end (C reads the terminating NUL there).
    #[inline]
    fn p(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// The subject byte at `i`, or 0 at its end.
    #[inline]
    fn s(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn check_capture(&self, l: u8) -> Result<usize, Stop> {
        let l = l as i32 - b'1' as i32;
        if l < 0 || l as usize >= self.level || matches!(self.captures[l as usize].len, CapLen::Unfinished) {
            return Err(Stop::Error(format!("invalid capture index %{}", l + 1)));
        }
        Ok(l as usize)
    }

    fn capture_to_close(&self) -> Result<usize, Stop> {
        (0..self.level)
            .rev()
            .find(|&l| matches!(self.captures[l].len, CapLen::Unfinished))
            .ok_or_else(|| Stop::Error("invalid pattern capture".into()))
    }

    fn class_end(&self, mut p: usize) -> Result<usize, Stop> {
        let c = self.p(p);
        p += 1;
        match c {
            ESC => {
                if p >= self.pat.len() {
                    return Err(Stop::Error("malformed pattern (ends with '%')".into()));
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.p(p) == b'^' {
                    p += 1;
                }
                loop {
                    // look for a ']'
                    if p >= self.pat.len() {
                        return Err(Stop::Error("malformed pattern (missing ']')".into()));
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == ESC && p < self.pat.len() {
                        p += 1; // skip escapes (e.g. '%]')
                    }
                    if self.p(p) == b']' {
                        break;
                    }
                }
                Ok(p + 1)
            }
            _ => Ok(p),
        }
    }

    fn bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.p(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            if self.pat[p] == ESC {
                p += 1;
                if match_class(c, self.p(p)) {
                    return sig;
                }
            } else if self.p(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if self.pat[p] == c {
                return sig;
            }
        }
        !sig
    }

    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        if s >= self.src.len() {
            return false;
        }
        let c = self.src[s];
        match self.pat[p] {
            b'.' => true,
            ESC => match_class(c, self.p(p + 1)),
            b'[' => self.bracket_class(c, p, ep - 1),
            pc => pc == c,
        }
    }

    fn match_balance(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        if p + 1 >= self.pat.len() {
            return Err(Stop::Error("malformed pattern (missing arguments to '%b')".into()));
        }
        if self.s(s) != self.pat[p] || s >= self.src.len() {
            return Ok(None);
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        let mut depth = 1;
        let mut i = s + 1;
        while i < self.src.len() {
            self.step()?;
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
            i += 1;
        }
        Ok(None)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Stop> {
        let mut i = 0;
        while self.single_match(s + i, p, ep) {
            self.step()?;
            i += 1;
        }
        // keeps trying to match with the maximum repetitions
        loop {
            if let Some(end) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(end));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, Stop> {
        loop {
            if let Some(end) = self.do_match(s, ep + 1)? {
                return Ok(Some(end));
            } else if self.single_match(s, p, ep) {
                s += 1; // try with one more repetition
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, len: CapLen) -> Result<Option<usize>, Stop> {
        let level = self.level;
        if level >= MAX_CAPTURES {
            return Err(Stop::Error("too many captures".into()));
        }
        self.captures[level] = Capture { init: s, len };
        self.level = level + 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level -= 1; // undo capture
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        let l = self.capture_to_close()?;
        self.captures[l].len = CapLen::Len(s - self.captures[l].init);
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.captures[l].len = CapLen::Unfinished; // undo capture
        }
        Ok(res)
    }

    fn match_capture(&mut self, s: usize, l: u8) -> Result<Option<usize>, Stop> {
        let l = self.check_capture(l)?;
        let CapLen::Len(len) = self.captures[l].len else {
            // A position capture has no text: C compares CAP_POSITION (-2) as a huge size_t.
            return Ok(None);
        };
        self.steps_for(len / super::meter::BYTES_PER_UNIT as usize)?;
        let init = self.captures[l].init;
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    fn do_match(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, Stop> {
        if self.depth == 0 {
            return Err(Stop::Error("pattern too complex".into()));
        }
        self.depth -= 1;
        let result = loop {
            self.step()?;
            if p == self.pat.len() {
                break Some(s); // end of pattern
            }
            match self.pat[p] {
                b'(' => {
                    break if self.p(p + 1) == b')' {
                        self.start_capture(s, p + 2, CapLen::Position)?
                    } else {
                        self.start_capture(s, p + 1, CapLen::Unfinished)?
                    };
                }
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == self.pat.len() => break (s == self.src.len()).then_some(s),
                ESC if self.p(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(e) => {
                        s = e;
                        p += 4;
                    }
                    None => break None,
                },
                ESC if self.p(p + 1) == b'f' => {
                    p += 2;
                    if self.p(p) != b'[' {
                        return Err(Stop::Error("missing '[' after '%f' in pattern".into()));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    if !self.bracket_class(previous, p, ep - 1) && self.bracket_class(self.s(s), p, ep - 1) {
                        p = ep;
                    } else {
                        break None;
                    }
                }
                ESC if self.p(p + 1).is_ascii_digit() => match self.match_capture(s, self.p(p + 1))? {
                    Some(e) => {
                        s = e;
                        p += 2;
                    }
                    None => break None,
                },
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.p(ep);
                    if !self.single_match(s, p, ep) {
                        if suffix == b'*' || suffix == b'?' || suffix == b'-' {
                            p = ep + 1; // accept empty
                        } else {
                            break None; // '+' or no suffix
                        }
                    } else {
                        match suffix {
                            b'?' => match self.do_match(s + 1, ep + 1)? {
                                Some(e) => break Some(e),
                                None => p = ep + 1,
                            },
                            b'+' => break self.max_expand(s + 1, p, ep)?,
                            b'*' => break self.max_expand(s, p, ep)?,
                            b'-' => break self.min_expand(s, p, ep)?,
                            _ => {
                                s += 1;
                                p = ep;
                            }
                        }
                    }
                }
            }
        };
        self.depth += 1;
        Ok(result)
    }
}

/// `match_class`: `%a`, `%d`… as C's ctype functions read them in the "C" locale (and the deprecated
/// `%z`, the NUL byte); an upper-case class is the complement; any other character matches itself.
fn match_class(c: u8, class: u8) -> bool {
    let res = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c < 32 || c == 127,
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => c == b' ' || (9..=13).contains(&c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0, // deprecated, still in 5.4
        _ => return class == c,
    };
    if class.is_ascii_lowercase() {
        res
    } else {
        !res
    }
}

/// Plain search (`lmemfind`) of `needle` in `hay`, paid for by the bytes scanned: the offset of the
/// first occurrence.
pub(crate) fn find_plain<F: Fuel>(hay: &[u8], needle: &[u8], fuel: &mut F) -> Result<Option<usize>, Stop> {
    if needle.is_empty() {
        return Ok(Some(0));
    }
    if needle.len() > hay.len() {
        return Ok(None);
    }
    let per_unit = super::meter::BYTES_PER_UNIT as usize;
    let finder = memchr::memmem::Finder::new(needle);
    // Scan in windows paid for before they are read; consecutive windows overlap by the needle's length
    // less one byte, so no occurrence falls between two of them.
    let mut start = 0;
    loop {
        let units = fuel.draw(((hay.len() - start) / per_unit + 1) as u64)?;
        let span = (units as usize).saturating_mul(per_unit);
        let end = start.saturating_add(span).saturating_add(needle.len()).min(hay.len());
        if let Some(i) = finder.find(&hay[start..end]) {
            let used = (i + needle.len()) / per_unit + 1;
            fuel.refund(units.saturating_sub(used as u64));
            return Ok(Some(start + i));
        }
        if end == hay.len() {
            let used = (end - start) / per_unit + 1;
            fuel.refund(units.saturating_sub(used as u64));
            return Ok(None);
        }
        start = end + 1 - needle.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tank(u64);

    impl Fuel for Tank {
        fn draw(&mut self, want: u64) -> Result<u64, Stop> {
            if self.0 == 0 {
                return Err(Stop::Spent);
            }
            let n = want.min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn refund(&mut self, steps: u64) {
            self.0 += steps;
        }
    }

    fn find(s: &str, p: &str, fuel: u64) -> Result<Option<(usize, usize)>, Stop> {
        let mut tank = Tank(fuel);
        let (anchor, start) = if p.starts_with('^') { (true, 1) } else { (false, 0) };
        let mut m = Matcher::new(s.as_bytes(), p.as_bytes(), &mut tank);
        let mut s1 = 0;
        loop {
            if let Some(e) = m.match_at(s1, start)? {
                return Ok(Some((s1, e)));
            }
            if s1 >= s.len() || anchor {
                return Ok(None);
            }
            s1 += 1;
        }
    }

    #[test]
    fn matches_like_lua() {
        assert_eq!(find("hello world", "o w", 1 << 20), Ok(Some((4, 7))));
        assert_eq!(find("hello", "l+", 1 << 20), Ok(Some((2, 4))));
        assert_eq!(find("hello", "^h.-o$", 1 << 20), Ok(Some((0, 5))));
        assert_eq!(find("THE (quick) fox", "%((%a+)%)", 1 << 20), Ok(Some((4, 11))));
        assert_eq!(find("f(a(b)c)d", "%b()", 1 << 20), Ok(Some((1, 8))));
        assert_eq!(find("THE quick", "%f[%a]%a+", 1 << 20), Ok(Some((0, 3))));
        assert_eq!(find("abc", "[", 1 << 20), Err(Stop::Error("malformed pattern (missing ']')".into())));
        assert_eq!(find("abc", "%", 1 << 20), Err(Stop::Error("malformed pattern (ends with '%')".into())));
    }

    #[test]
    fn backtracking_is_paid_for_step_by_step() {
        let s = "a".repeat(23);
        let p = "a?".repeat(23) + &"a".repeat(23) + "b";
        assert_eq!(find(&s, &p, 100_000), Err(Stop::Spent));
        // A pattern that does not backtrack takes a step or two a byte.
        assert_eq!(find(&format!("{}7", "x".repeat(1000)), "%d+$", 4_000), Ok(Some((1000, 1001))));
        assert_eq!(find(&"x".repeat(1000), "^x*$", 2_100), Ok(Some((0, 1000))));
    }

    #[test]
    fn plain_search_pays_for_the_bytes_it_scans() {
        let hay = vec![b'a'; 1 << 20];
        let mut tank = Tank(1_000);
        assert_eq!(find_plain(&hay, b"b", &mut tank), Err(Stop::Spent));
        let mut tank = Tank(1 << 20);
        assert_eq!(find_plain(&hay, b"b", &mut tank), Ok(None));
        assert!(tank.0 < (1 << 20) - (1 << 20) / 32 + 2, "{}", tank.0);
        let mut hay = hay;
        hay[700_000] = b'b';
        hay[700_001] = b'c';
        let mut tank = Tank(1 << 20);
        assert_eq!(find_plain(&hay, b"bc", &mut tank), Ok(Some(700_000)));
        let mut tank = Tank(1 << 20);
        assert_eq!(find_plain(&hay, b"", &mut tank), Ok(Some(0)));
    }
}
