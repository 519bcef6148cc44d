//! The library functions a hook may call, charged to its budget in proportion to the work they do. A C
//! library function counts as one VM instruction however long it runs, so the sandbox replaces every
//! one whose work grows with its arguments: `string.find`, `match`, `gmatch` and `gsub` run the ported
//! matcher (`pattern.rs`), which pays for each step; `sub`, `rep`, `upper`, `lower`, `reverse`, `byte`,
//! `char`, `table.concat`, `insert`, `remove`, `unpack` and `select` are small Rust versions that pay per
//! byte and per value; `string.format`, `pack`, `unpack`, `packsize`, `table.move`, `tonumber` and the
//! `utf8` functions keep Lua's C code behind a wrapper that pays for an upper bound of the work first and
//! for what they produced after. Results built outside Lua's heap are checked against the call's
//! memory limit before they are built. On strings of at most `SHORT_STRING` bytes, `sub`, `byte`, `upper`
//! and `lower` run Lua's C code from a Lua wrapper instead (bounded work, counted instructions, no host
//! call). Errors read as Lua's own (`t.lua:3: bad argument #2 to 'rep' (number expected, got nil)`),
//! pointing at the script's line.

use super::meter::{caller, Meter, BYTES_PER_UNIT};
use super::pattern::{self, Captured, Fuel, Matcher, Stop};
use mlua::{Function, Integer, Lua, MultiValue, Table, Value};
use std::cell::Cell;
use std::sync::Arc;

/// The registry name of Lua's own `select`, for the trusted prelude (scripts get the charged one).
pub(crate) const C_SELECT: &str = "smsgate.c_select";

/// `string.sub`, `byte`, `upper` and `lower` on strings up to this many bytes run Lua's own C code.
const SHORT_STRING: usize = 256;

/// The short-string fast path (see `install`): the string table, `SHORT_STRING`, then Lua's C `sub`, `byte`,
/// `upper` and `lower`. A wrapper hands the charged function its arguments as it got them (a missing one
/// stays missing); the charged functions skip the wrapper's frame when they name the caller in an error.
const SHORT_STRING_FAST_PATH: &str = r#"
local string, SHORT, sub, byte, upper, lower = ...
local type, mtype, rawset = type, math.type, rawset
local charged_sub, charged_byte, charged_upper, charged_lower = string.sub, string.byte, string.upper, string.lower
local function index(n) return n == nil or mtype(n) == "integer" end
rawset(string, "sub", function(s, ...)
  local i, j = ...
  if type(s) == "string" and #s <= SHORT and mtype(i) == "integer" and index(j) then return sub(s, i, j) end
  return charged_sub(s, ...)
end)
rawset(string, "byte", function(s, ...)
  local i, j = ...
  if type(s) == "string" and #s <= SHORT and index(i) and index(j) then return byte(s, i, j) end
  return charged_byte(s, ...)
end)
rawset(string, "upper", function(s, ...)
  if type(s) == "string" and #s <= SHORT then return upper(s) end
  return charged_upper(s, ...)
end)
rawset(string, "lower", function(s, ...)
  if type(s) == "string" and #s <= SHORT then return lower(s) end
  return charged_lower(s, ...)
end)
"#;

/// Lua's `MAXSIZE` for `string.rep` (INT_MAX on 64-bit platforms).
const MAX_SIZE: u64 = i32::MAX as u64;
/// Values a function may return at once (Lua's stack holds at most a million slots).
const MAX_RESULTS: u64 = 999_000;

/// Installs the charged functions into the real `string`, `table` and `utf8` tables (so method calls
/// on strings use them too) and the base `select` and `tonumber`.
pub(super) fn install(lua: &Lua, meter: &Arc<Meter>) -> mlua::Result<()> {
    let g = lua.globals();
    let string: Table = g.get("string")?;
    let table: Table = g.get("table")?;
    let utf8: Table = g.get("utf8")?;

    macro_rules! native {
        ($t:expr, $name:literal, $f:expr) => {{
            let m = meter.clone();
            let f = $f;
            $t.raw_set($name, lua.create_function(move |lua, args: MultiValue| f(lua, &m, args))?)?;
        }};
    }
    // Lua's own C functions, for the short-string fast path below.
    let c_short: (Function, Function, Function, Function) =
        (string.get("sub")?, string.get("byte")?, string.get("upper")?, string.get("lower")?);
    native!(string, "find", |lua: &Lua, m: &Arc<Meter>, a| find_aux(lua, m, a, true));
    native!(string, "match", |lua: &Lua, m: &Arc<Meter>, a| find_aux(lua, m, a, false));
    native!(string, "gmatch", gmatch);
    native!(string, "gsub", gsub);
    native!(string, "sub", sub);
    native!(string, "rep", rep);
    native!(string, "upper", |lua: &Lua, m: &Arc<Meter>, a| map_bytes(
        lua,
        m,
        a,
        "string.upper",
        u8::to_ascii_uppercase
    ));
    native!(string, "lower", |lua: &Lua, m: &Arc<Meter>, a| map_bytes(
        lua,
        m,
        a,
        "string.lower",
        u8::to_ascii_lowercase
    ));
    native!(string, "reverse", reverse);
    native!(string, "byte", byte);
    native!(string, "char", char);
    native!(table, "concat", concat);
    native!(table, "insert", insert);
    native!(table, "remove", remove);
    let c_unpack: Function = table.get("unpack")?;
    native!(table, "unpack", move |lua: &Lua, m: &Arc<Meter>, a| unpack(lua, m, a, &c_unpack));
    // The trusted prelude keeps Lua's own `select` for the values the host passes (at most a few dozen).
    lua.set_named_registry_value(C_SELECT, g.get::<Function>("select")?)?;
    native!(g, "select", select);

    // On a short string these do a bounded amount of work (at most SHORT_STRING bytes), so Lua's C code
    // serves them from a Lua wrapper (a few metered instructions) instead of the charged Rust version (a
    // host call, several times dearer). Anything else, invalid arguments included, goes to the charged one,
    // which also writes the error message.
    lua.load(SHORT_STRING_FAST_PATH).set_name(super::meter::WRAPPER_CHUNK).call::<()>((
        string.clone(),
        SHORT_STRING,
        c_short.0,
        c_short.1,
        c_short.2,
        c_short.3,
    ))?;

    // Lua's C code behind a wrapper: `cost` bounds the work before the call (bytes, values).
    macro_rules! wrapped {
        ($t:ident, $name:literal, $post:expr, $cost:expr) => {{
            let original: Function = $t.get($name)?;
            let m = meter.clone();
            let cost = $cost;
            $t.raw_set(
                $name,
                lua.create_function(move |lua, args: MultiValue| {
                    let (bytes, items) = cost(lua, &args);
                    m.charge_work(lua, bytes, items)?;
                    let out = original.call::<MultiValue>(args).map_err(|e| {
                        let qualified = if stringify!($t) == "g" { $name } else { concat!(stringify!($t), ".", $name) };
                        c_error(lua, &m, qualified, e)
                    })?;
                    if $post {
                        let produced: usize =
                            out.iter().map(|v| if let Value::String(s) = v { s.as_bytes().len() } else { 0 }).sum();
                        m.charge_work(lua, produced, 0)?;
                    }
                    Ok(out)
                })?,
            )?;
        }};
    }
    wrapped!(string, "format", true, |_: &Lua, a: &MultiValue| (string_bytes(a), a.len()));
    wrapped!(string, "pack", true, |_: &Lua, a: &MultiValue| (pack_bound(a), a.len()));
    wrapped!(string, "packsize", false, |_: &Lua, a: &MultiValue| (string_bytes(a), 0));
    wrapped!(string, "unpack", false, |_: &Lua, a: &MultiValue| (string_bytes(a), str_len(a.front())));
    wrapped!(table, "move", false, |lua: &Lua, a: &MultiValue| {
        let span = match (int_arg(lua, a.get(1)), int_arg(lua, a.get(2))) {
            (Some(f), Some(e)) if e >= f => e.abs_diff(f).saturating_add(1),
            _ => 0,
        };
        (0, span.min(usize::MAX as u64) as usize)
    });
    wrapped!(g, "tonumber", false, |_: &Lua, a: &MultiValue| (str_len(a.front()), 0));
    wrapped!(utf8, "char", true, |_: &Lua, a: &MultiValue| (0, a.len()));
    wrapped!(utf8, "codepoint", false, |lua: &Lua, a: &MultiValue| {
        // Values returned: from i (default 1) to j (default i), within the string.
        let len = str_len(a.front()) as i64;
        let i = utf8_pos(int_arg(lua, a.get(1)).unwrap_or(1), len);
        let j = utf8_pos(int_arg(lua, a.get(2)).unwrap_or(i), len).min(len);
        (0, if j >= i { (j - i + 1) as usize } else { 0 })
    });
    wrapped!(utf8, "len", false, |_: &Lua, a: &MultiValue| (str_len(a.front()) * (BYTES_PER_UNIT as usize / 4), 0));
    wrapped!(utf8, "offset", false, |_: &Lua, a: &MultiValue| (str_len(a.front()) * (BYTES_PER_UNIT as usize / 4), 0));
    Ok(())
}

// ---- arguments, read and checked as lauxlib.c does -------------------------------------------------

/// A value's type as Lua's messages name it (`__name` of a table's metatable first).
fn type_name(v: Option<&Value>) -> String {
    match v {
        None => "no value".into(),
        Some(Value::Table(t)) => t
            .metatable()
            .and_then(|m| m.raw_get::<Option<mlua::String>>("__name").ok().flatten())
            .map(|n| n.to_string_lossy())
            .unwrap_or_else(|| "table".into()),
        Some(v) => plain_type_name(v).into(),
    }
}

fn plain_type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        Value::LightUserData(_) => "light userdata",
        _ => "userdata",
    }
}

/// An error raised at the script's line, as `luaL_error` words it.
fn lua_error(lua: &Lua, message: impl std::fmt::Display) -> mlua::Error {
    let at = caller(lua).map(|(src, line)| format!("{src}:{line}: ")).unwrap_or_default();
    mlua::Error::RuntimeError(format!("{at}{message}"))
}

/// `luaL_argerror`: argument `arg` (1-based) of function `name`, numbered as the caller wrote it.
fn arg_error(lua: &Lua, arg: usize, name: &str, extra: &str) -> mlua::Error {
    // Named as the script called it: a wrapper's own call of this function does not count.
    let (called, method) = lua
        .inspect_stack(super::meter::wrapper_frames(lua), |d| {
            let names = d.names();
            (names.name.map(|n| n.into_owned()), names.name_what == Some("method"))
        })
        .unwrap_or((None, false));
    let name = called.unwrap_or_else(|| name.to_owned());
    if method {
        if arg == 1 {
            return lua_error(lua, format!("calling '{name}' on bad self ({extra})"));
        }
        return lua_error(lua, format!("bad argument #{} to '{name}' ({extra})", arg - 1));
    }
    lua_error(lua, format!("bad argument #{arg} to '{name}' ({extra})"))
}

fn type_error(lua: &Lua, args: &MultiValue, arg: usize, name: &str, expected: &str) -> mlua::Error {
    arg_error(lua, arg, name, &format!("{expected} expected, got {}", type_name(args.get(arg - 1))))
}

/// `luaL_checklstring`: a string, or a number converted to one.
fn check_string(lua: &Lua, args: &MultiValue, arg: usize, name: &str) -> mlua::Result<mlua::String> {
    match args.get(arg - 1) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Integer(_) | Value::Number(_))) => {
            lua.coerce_string(v.clone())?.ok_or_else(|| type_error(lua, args, arg, name, "string"))
        }
        _ => Err(type_error(lua, args, arg, name, "string")),
    }
}

fn opt_string(lua: &Lua, args: &MultiValue, arg: usize, name: &str) -> mlua::Result<Option<mlua::String>> {
    match args.get(arg - 1) {
        None | Some(Value::Nil) => Ok(None),
        Some(_) => check_string(lua, args, arg, name).map(Some),
    }
}

/// `luaL_checkinteger`: an integer, a float with an exact integer value, or a string holding one.
fn check_integer(lua: &Lua, args: &MultiValue, arg: usize, name: &str) -> mlua::Result<Integer> {
    let v = args.get(arg - 1);
    if let Some(Value::Integer(i)) = v {
        return Ok(*i);
    }
    match v {
        Some(v @ (Value::Number(_) | Value::String(_))) => match lua.coerce_integer(v.clone())? {
            Some(i) => Ok(i),
            None if lua.coerce_number(v.clone())?.is_some() => {
                Err(arg_error(lua, arg, name, "number has no integer representation"))
            }
            None => Err(type_error(lua, args, arg, name, "number")),
        },
        _ => Err(type_error(lua, args, arg, name, "number")),
    }
}

fn opt_integer(lua: &Lua, args: &MultiValue, arg: usize, name: &str, default: Integer) -> mlua::Result<Integer> {
    match args.get(arg - 1) {
        None | Some(Value::Nil) => Ok(default),
        Some(_) => check_integer(lua, args, arg, name),
    }
}

fn is_true(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Nil) | Some(Value::Boolean(false)))
}

/// An integer argument for a cost estimate only (the real function checks it).
fn int_arg(lua: &Lua, v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::Integer(i)) => Some(*i),
        Some(v @ (Value::Number(_) | Value::String(_))) => lua.coerce_integer(v.clone()).ok().flatten(),
        _ => None,
    }
}

fn str_len(v: Option<&Value>) -> usize {
    match v {
        Some(Value::String(s)) => s.as_bytes().len(),
        _ => 0,
    }
}

fn string_bytes(args: &MultiValue) -> usize {
    args.iter().map(|v| str_len(Some(v))).sum()
}

/// An upper bound of what `string.pack` writes: every count in the format (`c1000`, `i16`, `!8`) as
/// bytes, 16 bytes per format character (alignment, numbers) and the strings it copies.
fn pack_bound(args: &MultiValue) -> usize {
    let Some(Value::String(fmt)) = args.front() else { return 0 };
    let fmt = fmt.as_bytes();
    let mut counts = 0usize;
    let mut n = 0usize;
    for &b in fmt.iter() {
        if b.is_ascii_digit() {
            n = n.saturating_mul(10).saturating_add(usize::from(b - b'0'));
        } else {
            counts = counts.saturating_add(n);
            n = 0;
        }
    }
    counts.saturating_add(n).saturating_add(fmt.len().saturating_mul(16)).saturating_add(string_bytes(args))
}

/// `utf8`'s `u_posrelat`.
fn utf8_pos(pos: i64, len: i64) -> i64 {
    if pos >= 0 {
        pos
    } else if pos.unsigned_abs() > len as u64 {
        0
    } else {
        len + pos + 1
    }
}

/// `posrelatI`: a start position, clipped to 1.
fn posrelat_i(pos: Integer, len: usize) -> usize {
    if pos > 0 {
        pos as usize
    } else if pos == 0 || pos.unsigned_abs() > len as u64 {
        1
    } else {
        (len as i64 + pos + 1) as usize
    }
}

/// `getendpos`: an end position, clipped to `[0, len]`.
fn end_pos(pos: Integer, len: usize) -> usize {
    if pos > len as i64 {
        len
    } else if pos >= 0 {
        pos as usize
    } else if pos.unsigned_abs() > len as u64 {
        0
    } else {
        (len as i64 + pos + 1) as usize
    }
}

/// An error from Lua's C code called by a wrapper: C saw no Lua caller, so the script's line and the
/// function's name are put back.
fn c_error(lua: &Lua, meter: &Meter, name: &str, e: mlua::Error) -> mlua::Error {
    if meter.cut().is_some() {
        return meter.spent_error();
    }
    if matches!(e, mlua::Error::MemoryError(_)) {
        return meter.memory_spent(lua);
    }
    let message = super::meter::describe(&e);
    if let Some(rest) = message.strip_prefix("bad argument #") {
        if let Some((n, extra)) = rest.split_once(" to '?' (") {
            if let Ok(n) = n.parse::<usize>() {
                return arg_error(lua, n, name, extra.strip_suffix(')').unwrap_or(extra));
            }
        }
    }
    if message.contains(".lua:") || message.starts_with("smsgate prelude:") {
        return mlua::Error::RuntimeError(message);
    }
    lua_error(lua, message)
}

// ---- pattern matching -------------------------------------------------------------------------------

/// The call's budget as the matcher's fuel; keeps the meter's error to raise.
struct Tank<'a> {
    lua: &'a Lua,
    meter: &'a Meter,
    error: Option<mlua::Error>,
}

impl Fuel for Tank<'_> {
    fn draw(&mut self, want: u64) -> Result<u64, Stop> {
        self.meter.draw(self.lua, want).map_err(|e| {
            self.error = Some(e);
            Stop::Spent
        })
    }

    fn refund(&mut self, steps: u64) {
        self.meter.refund(steps);
    }
}

impl Tank<'_> {
    fn fail(&mut self, stop: Stop) -> mlua::Error {
        match stop {
            Stop::Spent => self.error.take().unwrap_or_else(|| self.meter.spent_error()),
            Stop::Error(message) => lua_error(self.lua, message),
        }
    }
}

/// Pushes capture `i` (a string or a position) of a match over `s..e`.
fn capture_value<F: Fuel>(
    lua: &Lua,
    m: &Matcher<'_, F>,
    src: &[u8],
    i: usize,
    s: usize,
    e: usize,
) -> Result<Value, CaptureError> {
    match m.capture(i, s, e).map_err(CaptureError::Stop)? {
        Captured::Span(a, b) => lua.create_string(&src[a..b]).map(Value::String).map_err(CaptureError::Lua),
        Captured::Position(p) => Ok(Value::Integer(p as Integer)),
    }
}

enum CaptureError {
    Stop(Stop),
    Lua(mlua::Error),
}

/// `push_captures`: every capture of the match `span`, or the whole match when there is none and `whole`
/// is set.
fn captures<F: Fuel>(
    lua: &Lua,
    meter: &Meter,
    m: &Matcher<'_, F>,
    src: &[u8],
    whole: bool,
    span: std::ops::Range<usize>,
    out: &mut MultiValue,
) -> mlua::Result<()> {
    let (s, e) = (span.start, span.end);
    let n = if m.levels() == 0 && whole { 1 } else { m.levels() };
    let mut bytes = 0;
    for i in 0..n {
        match capture_value(lua, m, src, i, s, e) {
            Ok(v) => {
                bytes += str_len(Some(&v));
                out.push_back(v);
            }
            Err(CaptureError::Stop(Stop::Error(message))) => return Err(lua_error(lua, message)),
            Err(CaptureError::Stop(Stop::Spent)) => return Err(meter.spent_error()),
            Err(CaptureError::Lua(e)) => return Err(e),
        }
    }
    meter.charge_work(lua, bytes, n)
}

fn find_aux(lua: &Lua, meter: &Arc<Meter>, args: MultiValue, find: bool) -> mlua::Result<MultiValue> {
    let name = if find { "string.find" } else { "string.match" };
    let s = check_string(lua, &args, 1, name)?;
    let p = check_string(lua, &args, 2, name)?;
    let init = opt_integer(lua, &args, 3, name, 1)?;
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let init = posrelat_i(init, src.len()) - 1;
    let mut out = MultiValue::new();
    if init > src.len() {
        out.push_back(Value::Nil);
        return Ok(out);
    }
    let mut tank = Tank { lua, meter, error: None };
    if find && (is_true(args.get(3)) || pattern::no_specials(&pat)) {
        // a plain search
        match pattern::find_plain(&src[init..], &pat, &mut tank) {
            Ok(Some(i)) => {
                out.push_back(Value::Integer((init + i + 1) as Integer));
                out.push_back(Value::Integer((init + i + pat.len()) as Integer));
            }
            Ok(None) => out.push_back(Value::Nil),
            Err(stop) => return Err(tank.fail(stop)),
        }
        return Ok(out);
    }
    let anchor = pat.first() == Some(&b'^');
    let start = usize::from(anchor);
    let found = {
        let mut m = Matcher::new(&src, &pat, &mut tank);
        let mut s1 = init;
        let found = loop {
            match m.match_at(s1, start) {
                Ok(Some(e)) => {
                    if find {
                        out.push_back(Value::Integer((s1 + 1) as Integer));
                        out.push_back(Value::Integer(e as Integer));
                    }
                    break Ok(captures(lua, meter, &m, &src, !find, s1..e, &mut out).map(|()| true));
                }
                Ok(None) if s1 < src.len() && !anchor => s1 += 1,
                Ok(None) => break Ok(Ok(false)),
                Err(stop) => break Err(stop),
            }
        };
        m.finish();
        found
    };
    match found {
        Ok(Ok(true)) => Ok(out),
        Ok(Ok(false)) => {
            out.push_back(Value::Nil);
            Ok(out)
        }
        Ok(Err(e)) => Err(e),
        Err(stop) => Err(tank.fail(stop)),
    }
}

fn gmatch(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<Function> {
    let s = check_string(lua, &args, 1, "string.gmatch")?;
    let p = check_string(lua, &args, 2, "string.gmatch")?;
    let len = s.as_bytes().len();
    let mut init = posrelat_i(opt_integer(lua, &args, 3, "string.gmatch", 1)?, len) - 1;
    if init > len {
        init = len + 1; // start after the string's end: nothing to find
    }
    let meter = meter.clone();
    let position = Cell::new(init);
    let last_match: Cell<Option<usize>> = Cell::new(None);
    lua.create_function(move |lua, ()| {
        let (src, pat) = (s.as_bytes(), p.as_bytes());
        let mut tank = Tank { lua, meter: &meter, error: None };
        let mut out = MultiValue::new();
        let result = {
            let mut m = Matcher::new(&src, &pat, &mut tank);
            let mut at = position.get();
            let result = loop {
                if at > src.len() {
                    break Ok(Ok(()));
                }
                match m.match_at(at, 0) {
                    Ok(Some(e)) if Some(e) != last_match.get() => {
                        position.set(e);
                        last_match.set(Some(e));
                        break Ok(captures(lua, &meter, &m, &src, true, at..e, &mut out));
                    }
                    Ok(_) => at += 1,
                    Err(stop) => break Err(stop),
                }
            };
            m.finish();
            result
        };
        match result {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) => Err(e),
            Err(stop) => Err(tank.fail(stop)),
        }
    })
}

/// The replacement argument of `gsub`.
enum Replacement {
    Text(mlua::String),
    Call(Function),
    Index(Table),
}

fn gsub(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<MultiValue> {
    let s = check_string(lua, &args, 1, "string.gsub")?;
    let p = check_string(lua, &args, 2, "string.gsub")?;
    let src_len = s.as_bytes().len();
    let max = opt_integer(lua, &args, 4, "string.gsub", src_len as Integer + 1)?;
    let replacement = match args.get(2) {
        Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
            Replacement::Text(lua.coerce_string(v.clone())?.expect("numbers convert to strings"))
        }
        Some(Value::Function(f)) => Replacement::Call(f.clone()),
        Some(Value::Table(t)) => Replacement::Index(t.clone()),
        _ => return Err(type_error(lua, &args, 3, "string.gsub", "string/function/table")),
    };
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let anchor = pat.first() == Some(&b'^');
    let start = usize::from(anchor);
    let mut tank = Tank { lua, meter, error: None };
    let mut out: Vec<u8> = Vec::new();
    let mut paid = 0usize;
    let mut n: Integer = 0;
    let mut changed = false;
    let mut at = 0usize;
    let mut last_match = None;
    let result = {
        let mut m = Matcher::new(&src, &pat, &mut tank);
        let result = loop {
            if n >= max {
                break Ok(Ok(()));
            }
            let e = match m.match_at(at, start) {
                Ok(e) => e,
                Err(stop) => break Err(stop),
            };
            match e {
                Some(e) if Some(e) != last_match => {
                    n += 1;
                    match add_value(lua, &m, &src, at, e, &replacement, &mut out) {
                        Ok(c) => changed |= c,
                        Err(err) => break Ok(Err(err)),
                    }
                    at = e;
                    last_match = Some(e);
                }
                _ if at < src.len() => {
                    out.push(src[at]);
                    at += 1;
                }
                _ => break Ok(Ok(())),
            }
            // Pays for the text built so far, and keeps it within the memory the call may still use.
            if out.len() - paid >= 4096 {
                if let Err(err) = meter.room(lua, out.len()).and_then(|()| meter.charge_work(lua, out.len() - paid, 0))
                {
                    break Ok(Err(err));
                }
                paid = out.len();
            }
            if anchor {
                break Ok(Ok(()));
            }
        };
        m.finish();
        result
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(stop) => return Err(tank.fail(stop)),
    }
    let mut ret = MultiValue::new();
    if !changed {
        ret.push_back(Value::String(s.clone()));
    } else {
        out.extend_from_slice(&src[at..]);
        meter.room(lua, out.len())?;
        meter.charge_work(lua, out.len() - paid, 0)?;
        ret.push_back(Value::String(lua.create_string(&out)?));
    }
    ret.push_back(Value::Integer(n));
    Ok(ret)
}

/// `add_value`: appends the replacement of the match `s..e`; whether it changed anything.
fn add_value<F: Fuel>(
    lua: &Lua,
    m: &Matcher<'_, F>,
    src: &[u8],
    s: usize,
    e: usize,
    replacement: &Replacement,
    out: &mut Vec<u8>,
) -> mlua::Result<bool> {
    let stop = |stop: Stop| match stop {
        Stop::Error(message) => lua_error(lua, message),
        Stop::Spent => mlua::Error::RuntimeError("budget spent".into()),
    };
    let value = match replacement {
        Replacement::Text(text) => {
            add_s(lua, m, src, s, e, &text.as_bytes(), out)?;
            return Ok(true);
        }
        Replacement::Call(f) => {
            let n = if m.levels() == 0 { 1 } else { m.levels() };
            let mut args = MultiValue::new();
            for i in 0..n {
                match capture_value(lua, m, src, i, s, e) {
                    Ok(v) => args.push_back(v),
                    Err(CaptureError::Stop(st)) => return Err(stop(st)),
                    Err(CaptureError::Lua(err)) => return Err(err),
                }
            }
            f.call::<Value>(args)?
        }
        Replacement::Index(t) => {
            let key = match capture_value(lua, m, src, 0, s, e) {
                Ok(v) => v,
                Err(CaptureError::Stop(st)) => return Err(stop(st)),
                Err(CaptureError::Lua(err)) => return Err(err),
            };
            t.get::<Value>(key)?
        }
    };
    match value {
        Value::Nil | Value::Boolean(false) => {
            out.extend_from_slice(&src[s..e]); // keep the original text
            Ok(false)
        }
        v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
            let text = lua.coerce_string(v)?.expect("strings and numbers convert");
            out.extend_from_slice(&text.as_bytes());
            Ok(true)
        }
        other => Err(lua_error(lua, format!("invalid replacement value (a {})", plain_type_name(&other)))),
    }
}

/// `add_s`: a replacement string with `%0`-`%9` and `%%`.
fn add_s<F: Fuel>(
    lua: &Lua,
    m: &Matcher<'_, F>,
    src: &[u8],
    s: usize,
    e: usize,
    text: &[u8],
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let mut rest = text;
    while let Some(i) = memchr::memchr(b'%', rest) {
        out.extend_from_slice(&rest[..i]);
        let c = rest.get(i + 1).copied().unwrap_or(0);
        if c == b'%' {
            out.push(b'%');
        } else if c == b'0' {
            out.extend_from_slice(&src[s..e]);
        } else if c.is_ascii_digit() {
            match m.capture(usize::from(c - b'1'), s, e) {
                Ok(Captured::Span(a, b)) => out.extend_from_slice(&src[a..b]),
                Ok(Captured::Position(p)) => out.extend_from_slice(p.to_string().as_bytes()),
                Err(Stop::Error(message)) => return Err(lua_error(lua, message)),
                Err(Stop::Spent) => return Err(mlua::Error::RuntimeError("budget spent".into())),
            }
        } else {
            return Err(lua_error(lua, "invalid use of '%' in replacement string"));
        }
        rest = rest.get(i + 2..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    Ok(())
}

// ---- the other string functions ----------------------------------------------------------------------

/// Hands a result built in Rust to Lua, after paying for it and checking the memory it takes.
fn make_string(lua: &Lua, meter: &Meter, bytes: &[u8]) -> mlua::Result<mlua::String> {
    meter.room(lua, bytes.len())?;
    meter.charge_work(lua, bytes.len(), 0)?;
    lua.create_string(bytes)
}

fn sub(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<mlua::String> {
    let s = check_string(lua, &args, 1, "string.sub")?;
    let bytes = s.as_bytes();
    let start = posrelat_i(check_integer(lua, &args, 2, "string.sub")?, bytes.len());
    let end = end_pos(opt_integer(lua, &args, 3, "string.sub", -1)?, bytes.len());
    if start == 1 && end == bytes.len() {
        return Ok(s.clone());
    }
    if start > end {
        return lua.create_string("");
    }
    make_string(lua, meter, &bytes[start - 1..end])
}

fn map_bytes(
    lua: &Lua,
    meter: &Arc<Meter>,
    args: MultiValue,
    name: &str,
    f: fn(&u8) -> u8,
) -> mlua::Result<mlua::String> {
    let s = check_string(lua, &args, 1, name)?;
    let bytes = s.as_bytes();
    meter.room(lua, bytes.len())?;
    meter.charge_work(lua, bytes.len(), 0)?;
    let mapped: Vec<u8> = bytes.iter().map(f).collect();
    lua.create_string(&mapped)
}

fn reverse(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<mlua::String> {
    let s = check_string(lua, &args, 1, "string.reverse")?;
    let bytes = s.as_bytes();
    meter.room(lua, bytes.len())?;
    meter.charge_work(lua, bytes.len(), 0)?;
    let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
    lua.create_string(&reversed)
}

fn rep(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<mlua::String> {
    let s = check_string(lua, &args, 1, "string.rep")?;
    let n = check_integer(lua, &args, 2, "string.rep")?;
    let sep = opt_string(lua, &args, 3, "string.rep")?;
    let (piece, sep) = (s.as_bytes(), sep.as_ref().map(|s| s.as_bytes()));
    let sep: &[u8] = sep.as_deref().unwrap_or_default();
    if n <= 0 {
        return lua.create_string("");
    }
    let (l, lsep, n) = (piece.len() as u64, sep.len() as u64, n as u64);
    if l + lsep > MAX_SIZE / n {
        return Err(lua_error(lua, "resulting string too large"));
    }
    let total = (n * l + (n - 1) * lsep) as usize;
    meter.room(lua, total)?;
    meter.charge_work(lua, total, 0)?;
    // Built by doubling, so that the work follows the bytes, not the number of pieces.
    let mut unit = Vec::with_capacity(piece.len() + sep.len());
    unit.extend_from_slice(&piece);
    unit.extend_from_slice(sep);
    let mut out = unit.repeat(n as usize);
    out.truncate(total);
    lua.create_string(&out)
}

fn byte(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<MultiValue> {
    let s = check_string(lua, &args, 1, "string.byte")?;
    let bytes = s.as_bytes();
    let pi = opt_integer(lua, &args, 2, "string.byte", 1)?;
    let posi = posrelat_i(pi, bytes.len());
    let pose = end_pos(opt_integer(lua, &args, 3, "string.byte", pi)?, bytes.len());
    let mut out = MultiValue::new();
    if posi > pose {
        return Ok(out); // empty interval: no values
    }
    let n = (pose - posi + 1) as u64;
    if n >= i32::MAX as u64 {
        return Err(lua_error(lua, "string slice too long"));
    }
    if n > MAX_RESULTS {
        return Err(lua_error(lua, "stack overflow (string slice too long)"));
    }
    meter.charge_work(lua, 0, n as usize)?;
    out.extend(bytes[posi - 1..pose].iter().map(|&b| Value::Integer(Integer::from(b))));
    Ok(out)
}

fn char(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<mlua::String> {
    meter.charge_work(lua, args.len(), args.len())?;
    let mut out = Vec::with_capacity(args.len());
    for i in 1..=args.len() {
        let c = check_integer(lua, &args, i, "string.char")?;
        if !(0..=255).contains(&c) {
            return Err(arg_error(lua, i, "string.char", "value out of range"));
        }
        out.push(c as u8);
    }
    lua.create_string(&out)
}

// ---- table and base functions -------------------------------------------------------------------------

/// The table argument of a `table` function (`checktab`: real tables only here; the sandbox gives
/// scripts no other value a table function could use).
fn check_table(lua: &Lua, args: &MultiValue, name: &str) -> mlua::Result<Table> {
    match args.front() {
        Some(Value::Table(t)) => Ok(t.clone()),
        _ => Err(type_error(lua, args, 1, name, "table")),
    }
}

fn concat(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<mlua::String> {
    let t = check_table(lua, &args, "table.concat")?;
    let last = t.len()?;
    let sep = opt_string(lua, &args, 2, "table.concat")?;
    let sep = sep.as_ref().map(|s| s.as_bytes());
    let sep: &[u8] = sep.as_deref().unwrap_or_default();
    let mut i = opt_integer(lua, &args, 3, "table.concat", 1)?;
    let last = opt_integer(lua, &args, 4, "table.concat", last)?;
    let mut out = Vec::new();
    while i <= last {
        let v = t.get::<Value>(i)?;
        let text = match v {
            Value::String(s) => s,
            v @ (Value::Integer(_) | Value::Number(_)) => lua.coerce_string(v)?.expect("numbers convert"),
            _ => return Err(lua_error(lua, format!("invalid value (at index {i}) in table for 'concat'"))),
        };
        let bytes = text.as_bytes();
        let add = bytes.len() + if i < last { sep.len() } else { 0 };
        meter.room(lua, out.len() + add)?;
        meter.charge_work(lua, add, 1)?;
        out.extend_from_slice(&bytes);
        if i < last {
            out.extend_from_slice(sep);
        }
        if i == Integer::MAX {
            break;
        }
        i += 1;
    }
    lua.create_string(&out)
}

fn insert(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<()> {
    let t = check_table(lua, &args, "table.insert")?;
    let e = t.len()?.wrapping_add(1); // first empty element
    let (pos, value) = match args.len() {
        2 => (e, args[1].clone()),
        3 => {
            let pos = check_integer(lua, &args, 2, "table.insert")?;
            // pos must be in [1, e]
            if (pos as u64).wrapping_sub(1) >= e as u64 {
                return Err(arg_error(lua, 2, "table.insert", "position out of bounds"));
            }
            meter.charge_work(lua, 0, (e - pos) as usize)?;
            let mut i = e;
            while i > pos {
                t.set(i, t.get::<Value>(i - 1)?)?; // move up elements
                i -= 1;
            }
            (pos, args[2].clone())
        }
        _ => return Err(lua_error(lua, "wrong number of arguments to 'insert'")),
    };
    t.set(pos, value)
}

fn remove(lua: &Lua, meter: &Arc<Meter>, args: MultiValue) -> mlua::Result<Value> {
    let t = check_table(lua, &args, "table.remove")?;
    let size = t.len()?;
    let mut pos = opt_integer(lua, &args, 2, "table.remove", size)?;
    // a given pos must be in [1, size + 1]
    if pos != size && (pos as u64).wrapping_sub(1) > size as u64 {
        return Err(arg_error(lua, 2, "table.remove", "position out of bounds"));
    }
    let result = t.get::<Value>(pos)?;
    if pos < size {
        meter.charge_work(lua, 0, (size - pos) as usize)?;
    }
    while pos < size {
        t.set(pos, t.get::<Value>(pos + 1)?)?;
        pos += 1;
    }
    t.set(pos, Value::Nil)?;
    Ok(result)
}

fn unpack(lua: &Lua, meter: &Arc<Meter>, args: MultiValue, c_unpack: &Function) -> mlua::Result<MultiValue> {
    let Some(Value::Table(t)) = args.front().cloned() else {
        // Any other value (a string: its characters index the string table) goes to Lua's own code.
        meter.charge_work(lua, 0, str_len(args.front()))?;
        return c_unpack.call::<MultiValue>(args).map_err(|e| c_error(lua, meter, "table.unpack", e));
    };
    let i = opt_integer(lua, &args, 2, "table.unpack", 1)?;
    let e = match args.get(2) {
        None | Some(Value::Nil) => t.len()?,
        Some(_) => check_integer(lua, &args, 3, "table.unpack")?,
    };
    let mut out = MultiValue::new();
    if i > e {
        return Ok(out); // empty range
    }
    let n = (e as u64).wrapping_sub(i as u64);
    if n >= MAX_RESULTS {
        return Err(lua_error(lua, "too many results to unpack"));
    }
    meter.room(lua, (n as usize + 1) * 16)?;
    meter.charge_work(lua, 0, n as usize + 1)?;
    let mut k = i;
    loop {
        out.push_back(t.get::<Value>(k)?);
        if k == e {
            break;
        }
        k += 1;
    }
    Ok(out)
}

fn select(lua: &Lua, meter: &Arc<Meter>, mut args: MultiValue) -> mlua::Result<MultiValue> {
    let n = args.len() as Integer;
    if let Some(Value::String(s)) = args.front() {
        if s.as_bytes().first() == Some(&b'#') {
            meter.charge_work(lua, 0, args.len())?;
            let mut out = MultiValue::new();
            out.push_back(Value::Integer(n - 1));
            return Ok(out);
        }
    }
    let mut i = check_integer(lua, &args, 1, "select")?;
    if i < 0 {
        i += n;
    } else if i > n {
        i = n;
    }
    if i < 1 {
        return Err(arg_error(lua, 1, "select", "index out of range"));
    }
    meter.charge_work(lua, 0, args.len())?;
    args.drain(..i as usize);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The Lua code that records what each call returned (or the error it raised), one line per call, into
    /// `out`; `plain_error` must be in scope.
    macro_rules! recorder {
        () => {
            r##"
local out = {}
local function rec(ok, ...)
  if not ok then
    local e = ...
    if type(e) == "userdata" then e = plain_error(e) end
    out[#out + 1] = "error: " .. tostring(e)
    return
  end
  local parts = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    parts[#parts + 1] = type(v) .. ":" .. tostring(v)
  end
  out[#out + 1] = table.concat(parts, ",")
end
"##
        };
    }

    /// Runs the same calls of find, match, gmatch and gsub in a state with Lua's own C string library and
    /// in one with the port, and returns what each saw, one line per call.
    const HARNESS: &str = concat!(
        "local s, p, init, plain, repl, plain_error = ...\n",
        recorder!(),
        r##"
rec(pcall(function() return string.find(s, p, init, plain) end))
rec(pcall(function() return string.find(s, p, init) end))
rec(pcall(function() return string.match(s, p, init) end))
rec(pcall(function() return s:match(p) end))
rec(pcall(function()
  local r = {}
  for a, b in string.gmatch(s, p, init) do
    r[#r + 1] = tostring(a) .. "|" .. tostring(b)
    if #r > 40 then break end
  end
  return table.concat(r, ";")
end))
rec(pcall(function() return string.gsub(s, p, repl) end))
rec(pcall(function() return string.gsub(s, p, repl, 2) end))
rec(pcall(function() return string.gsub(s, p, function(a, b) if b == nil then return nil end return "<" .. tostring(a) .. tostring(b) .. ">" end) end))
rec(pcall(function() return string.gsub(s, p, {a = "A", b = false, ["1"] = 7}) end))
return table.concat(out, "\n")
"##
    );

    fn states() -> (Lua, Lua, Arc<Meter>) {
        let c = Lua::new();
        let port = Lua::new();
        let meter = Meter::new("t.lua".into());
        meter.start(u64::MAX / 4, Duration::from_secs(3600), usize::MAX, true);
        install(&port, &meter).unwrap();
        (c, port, meter)
    }

    /// A host error as the plain string a script sees.
    fn plain_error(lua: &Lua) -> Function {
        lua.create_function(|lua, e: Value| match e {
            Value::Error(e) => lua.create_string(super::super::meter::describe(&e)).map(Value::String),
            other => Ok(other),
        })
        .unwrap()
    }

    fn run(lua: &Lua, s: &[u8], p: &[u8], init: Option<i64>, plain: bool, repl: &[u8]) -> String {
        let plain_error = plain_error(lua);
        let f = lua.load(HARNESS).set_name("=h").into_function().unwrap();
        let args = (
            lua.create_string(s).unwrap(),
            lua.create_string(p).unwrap(),
            init,
            plain,
            lua.create_string(repl).unwrap(),
            plain_error,
        );
        f.call::<mlua::String>(args).unwrap().to_string_lossy()
    }

    fn same(c: &Lua, port: &Lua, s: &[u8], p: &[u8], init: Option<i64>, plain: bool, repl: &[u8]) {
        let expected = run(c, s, p, init, plain, repl);
        let got = run(port, s, p, init, plain, repl);
        assert_eq!(
            got,
            expected,
            "subject {:?} pattern {:?} init {init:?} plain {plain} repl {:?}",
            String::from_utf8_lossy(s),
            String::from_utf8_lossy(p),
            String::from_utf8_lossy(repl)
        );
    }

    /// `sub`, `byte`, `upper` and `lower` answer as Lua's own do, on either side of the short-string fast
    /// path, for every kind of index (negative, zero, past the end, float, string, nil) and for bad subjects,
    /// errors included (with the caller's line and the name it called, method calls too). (A bad call in
    /// tail position loses its line: the wrapper's tail call replaced the script's frame.)
    #[test]
    fn short_string_fast_path_and_charged_functions_answer_as_lua_does() {
        const CASES: &str = concat!(
            "local plain_error = ...\n",
            recorder!(),
            r##"
local indexes = { nil, 0, 1, 2, 3, -1, -2, -300, 255, 256, 257, 300, 2.0, 2.5, "2", "x", {} }
for _, s in ipairs({ "", "+8613800138000", ("aB"):rep(128), ("aB"):rep(128) .. "c", 42, nil, {} }) do
  for a = 1, #indexes + 1 do
    for b = 1, #indexes + 1 do
      local i, j = indexes[a], indexes[b]
      rec(pcall(function() local r = { string.sub(s, i, j) } return r[1] end))
      rec(pcall(function() local r = { string.byte(s, i, j) } return #r, r[1], r[#r] end))
    end
  end
  rec(pcall(function() local r = string.upper(s) return r end))
  rec(pcall(function() local r = string.lower(s) return r end))
  rec(pcall(function() local a, b, c, d = s:sub(2, -2), s:byte(-1), s:upper(), s:lower() return a, b, c, d end))
  rec(pcall(function() local r = s:sub() return r end))
end
return table.concat(out, "\n")
"##
        );
        let (c, port, _meter) = states();
        let answers = |lua: &Lua| {
            lua.load(CASES).set_name("=h").call::<mlua::String>(plain_error(lua)).unwrap().to_string_lossy()
        };
        let (expected, got) = (answers(&c), answers(&port));
        assert!(expected.lines().count() > 2_000, "{expected}");
        for (line, (e, g)) in expected.lines().zip(got.lines()).enumerate() {
            assert_eq!(g, e, "call {line}");
        }
        assert_eq!(got.lines().count(), expected.lines().count());
    }

    /// The fast path stops at `SHORT_STRING` bytes, whatever the call's shape: from one byte more, `sub`,
    /// `byte`, `upper` and `lower` pay by the byte again (a budget of 1,000 units runs out within 5,000 calls),
    /// while at the bound they charge nothing (this state has no count hook, so only charges spend). A number
    /// subject, which Lua would coerce to a string, never takes the fast path, however short.
    #[test]
    fn the_short_string_fast_path_ends_at_its_bound() {
        let spends = |source: &str, len: usize| {
            let lua = Lua::new();
            let meter = Meter::new("t.lua".into());
            meter.start(1_000, Duration::from_secs(3600), usize::MAX, true);
            install(&lua, &meter).unwrap();
            let run = lua.load(source).call::<()>(("a".repeat(len), 12345));
            assert_eq!(run.is_err(), meter.cut().is_some(), "{source}: {run:?}");
            meter.cut().is_some()
        };
        for call in ["s:sub(2)", "string.sub(s, 1, -2)", "s:byte(1, -1)", "s:upper()", "string.lower(s)"] {
            let source = format!("local s, n = ... for i = 1, 5000 do local _ = {call} end");
            assert!(!spends(&source, SHORT_STRING), "{call} at the bound is free");
            assert!(spends(&source, SHORT_STRING + 1), "{call} past the bound pays");
        }
        assert!(spends("local s, n = ... for i = 1, 5000 do local _ = string.upper(n) end", 0), "a number pays");
    }

    /// Hand-picked patterns: every item kind, every class, anchors, captures, back-references, balances,
    /// frontiers, and every malformed form.
    #[test]
    fn the_port_matches_lua_on_a_corpus_of_patterns() {
        let (c, port, _meter) = states();
        let subjects: &[&[u8]] = &[
            b"",
            b"hello world",
            b"  key = value ; other=42\n",
            b"THE (quick) [brown] fox {jumps} over 13 lazy dogs!",
            b"aaa",
            b"abcabcabc",
            b"f(a(b)c)d(e",
            b"x\0y\0z",
            b"\xe4\xb8\xad\xe6\x96\x87 caf\xc3\xa9 \xff\x80",
            b"+86 138-0013-8000",
            b"1,2,,3,",
        ];
        let patterns: &[&[u8]] = &[
            b"",
            b"o",
            b"o w",
            b"l+",
            b"l*",
            b"l-",
            b"l?",
            b"^h",
            b"^",
            b"$",
            b"d$",
            b"^.-$",
            b".-",
            b".*",
            b"(o)(r)",
            b"()o()",
            b"((l)(l))",
            b"(l)%1",
            b"(a)(b)%2",
            b"%a+",
            b"%A+",
            b"%c",
            b"%C+",
            b"%d+",
            b"%D+",
            b"%g+",
            b"%l+",
            b"%L",
            b"%p+",
            b"%P+",
            b"%s+",
            b"%S+",
            b"%u+",
            b"%U",
            b"%w+",
            b"%W+",
            b"%x+",
            b"%X+",
            b"%z",
            b"%.",
            b"%%",
            b"[aeiou]+",
            b"[^aeiou]+",
            b"[a-f]+",
            b"[%d,]+",
            b"[%]]",
            b"[]]",
            b"[^]]+",
            b"[a-]",
            b"[-a]",
            b"[%a-z]",
            b"[%w_]+",
            b"%b()",
            b"%b[]",
            b"%b{}",
            b"%bxy",
            b"%f[%w]%w+",
            b"%f[%W]",
            b"%f[^%z]",
            b"%f[%a]",
            b"(%w+)%s*=%s*(%w+)",
            b"[^,]*",
            b",",
            b"\0",
            b"x%zy",
            b"y\0",
            b"[\0-\x10]",
            b"[\x80-\xff]+",
            b"(",
            b")",
            b"%",
            b"[",
            b"[^",
            b"[a",
            b"%b",
            b"%bx",
            b"%f",
            b"%fx",
            b"%1",
            b"(a)%2",
            b"(()",
            b"(%1)",
            b"%g",
            b"a**",
            b"a+?",
            b"^*",
            b"$a",
            b"a$b",
            b"(a*(.)%w(%s*))",
            b"%0",
            b"()",
            b"(.-)%s",
            b"^(%+?)(%d+)",
        ];
        let repls: &[&[u8]] = &[b"%0-%1", b"x", b"%%", b"%2", b"%", b"%z", b"[%1]"];
        let mut n = 0;
        for (i, s) in subjects.iter().enumerate() {
            for (j, p) in patterns.iter().enumerate() {
                let init = [None, Some(1), Some(0), Some(-3), Some(4), Some(100), Some(-100)][(i + j) % 7];
                let repl = repls[(i * 3 + j) % repls.len()];
                same(&c, &port, s, p, init, false, repl);
                same(&c, &port, s, p, init, true, repl);
                n += 2;
            }
        }
        assert!(n > 2000);
    }

    /// Random patterns from the magic characters and a few letters, on random subjects.
    #[test]
    fn the_port_matches_lua_on_random_patterns() {
        use proptest::test_runner::{Config, TestRunner};
        let (c, port, _meter) = states();
        let mut runner = TestRunner::new(Config { cases: 3000, failure_persistence: None, ..Config::default() });
        let pattern = proptest::collection::vec(proptest::sample::select(b"ab1 .%[]^$*+-?()dwsbfa0\0".to_vec()), 0..10);
        let subject = proptest::collection::vec(proptest::sample::select(b"aab1 ()[]\0x".to_vec()), 0..12);
        let init = proptest::option::of(-15i64..15);
        runner
            .run(&(subject, pattern, init), |(s, p, init)| {
                same(&c, &port, &s, &p, init, false, b"<%0>");
                Ok(())
            })
            .unwrap();
    }
}
