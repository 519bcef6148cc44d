//! Hostile Lua hooks through the real path (HTTP, pipeline, hook threads, real Lua): every way Lua code can
//! run after its budget is spent (message handlers, metamethods, iterators, `__close`, library callbacks,
//! error objects), every costly library call, the deadline, the fate of a cut-off state, and SIGTERM on the
//! real binary while hostile hooks run. Each door ends the call with `script_error`; the gateway goes on.
//! The same doors tried inline, as the gateway tries every call first: each ends within the slice, so it
//! holds the async worker no longer than that.

use crate::common::hooks::{self, cut_off, detail, send, HookTenant};
use crate::common::process::Server;
use crate::common::*;
use smsgate::phone::Phone;
use smsgate::script::{HookInput, RawVerdict, ScriptHook, SliceOutcome, SLICE_INSTRUCTIONS};
use std::time::Duration;

const HOSTILE_TOKEN: &str = "hostile-token-0000001";
const PLAIN_TOKEN: &str = "plain-token-00000001";

/// Each door spends the budget inside a different way Lua code runs.
const DOORS: &str = r#"
local function spin() while true do end end
local function mt(event, f) return setmetatable({}, {[event] = f or spin}) end
-- Set by a message handler that ran on past the budget; a state that served again would show it.
local escaped = false

local doors = {
  -- The issue's example, and other message handlers.
  issue = function() xpcall(error, function() while true do end end) end,
  finite_handler = function()
    local ok, e = xpcall(error, function() for i = 1, 3000000 do end return "handler finished" end)
    if e == "handler finished" then return { reject = "the handler ran past the budget" } end
  end,
  nested_handlers = function()
    xpcall(error, function() xpcall(error, function() while true do end end) while true do end end)
  end,
  handler_in_handler = function()
    xpcall(spin, function() xpcall(error, function() for i = 1, 3000000 do end end) return "done" end)
  end,
  handler_then_mark = function()
    xpcall(spin, function(e) for i = 1, 3000000 do end escaped = true return e end)
  end,
  check = function() if escaped then return { reject = "a message handler ran past the budget" } end end,
  handler_pcall = function() xpcall(error, function() pcall(spin) pcall(spin) return "x" end) end,
  pcall_loop = function() while true do pcall(spin) end end,
  xpcall_loop = function() while true do xpcall(spin, function(e) return e end) end end,
  -- Metamethods.
  index = function() return mt("__index").x end,
  newindex = function() mt("__newindex").x = 1 end,
  call = function() mt("__call")() end,
  tostring = function() return tostring(mt("__tostring")) end,
  eq = function() return mt("__eq") == mt("__eq") end,
  lt = function() return mt("__lt") < mt("__lt") end,
  le = function() return mt("__le") <= mt("__le") end,
  concat = function() return mt("__concat") .. "x" end,
  len = function() return #mt("__len") end,
  unm = function() return -mt("__unm") end,
  add = function() return mt("__add") + 1 end,
  pairs = function() for _ in pairs(mt("__pairs")) do end end,
  -- __close: Lua runs the close handlers of the frame the count hook stops while its error unwinds,
  -- with hooks off. No value may become closable.
  close = function() local x <close> = mt("__close") end,
  close_same_frame = function() local x <close> = mt("__close") while true do end end,
  close_added_later = function()
    local m = {} local o = setmetatable({}, m) m.__close = spin
    local x <close> = o
    while true do end
  end,
  close_in_for = function()
    local m = {} local o = setmetatable({}, m) m.__close = spin
    for _ in next, { 1 }, nil, o do while true do end end
  end,
  iterator = function() for _ in spin do end end,
  -- Library functions that call back into Lua.
  sort = function() table.sort({ 3, 2, 1 }, function(a, b) spin() end) end,
  sort_lt = function() table.sort({ mt("__lt"), mt("__lt"), mt("__lt") }) end,
  sort_c_comparator = function()
    local t = {} for i = 1, 30000 do t[i] = i % 7 end table.sort(t, rawequal)
  end,
  gsub_function = function() string.gsub("abc", "%w", spin) end,
  gsub_table = function() string.gsub("abc", "%w", mt("__index")) end,
  gmatch = function() for _ in ("x"):rep(100):gmatch("x") do spin() end end,
  format = function() return string.format("%s", mt("__tostring")) end,
  concat_index = function() table.concat(mt("__index"), ",", 1, 3) end,
  -- Error objects with metamethods.
  error_object_caught = function() local ok, e = pcall(error, mt("__tostring")) return tostring(e) end,
  error_object_handler = function() xpcall(error, function(e) return tostring(e) end, mt("__tostring")) end,
}

function on_send(req)
  local door = doors[req.params[1]]
  if door then return door() end
end
"#;

fn tenants<'a>(script: &'a str, extra: &'a str) -> Vec<HookTenant<'a>> {
    vec![
        HookTenant { name: "hostile", token: HOSTILE_TOKEN, script: Some(script), extra },
        HookTenant { name: "plain", token: PLAIN_TOKEN, script: None, extra: "" },
    ]
}

async fn healthy(gw: &TestGateway) {
    let health = gw.http.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let a = gw.post_as("/v1/sms/send", &native("+8613800138001", "SignIn", "123456"), Some(PLAIN_TOKEN)).await;
    assert_eq!(a.status, 200, "{:#}", a.json);
}

/// Runs every door in `names` through the inline attempt alone and checks each was cut off by the slice's
/// own instruction count or clock (not the call's budget, 100,000,000 instructions and 1 s here), which
/// is what bounds how long it holds the async worker, and that its state was dropped.
fn all_cut_off_inline(hook: &ScriptHook, names: &[&str]) {
    for which in names {
        let pooled = hook.pooled();
        match inline(hook, which) {
            SliceOutcome::CutOff(why) => {
                let sliced = why.contains(&format!("instruction budget exhausted ({SLICE_INSTRUCTIONS} per call)"))
                    || why.contains("time limit exceeded (200µs per call)")
                    || why.contains("memory limit exceeded (64 KiB per call)");
                assert!(sliced, "{which}: {why}");
            }
            other => panic!("{which}: {other:?}"),
        }
        assert_eq!(hook.pooled(), pooled - 1, "{which}: the cut-off state is dropped");
        // The gateway builds the next state on a hook thread; this test builds it here.
        whole(hook, "fine").unwrap();
    }
}

fn with_input<T>(which: &str, f: impl FnOnce(&HookInput<'_>) -> T) -> T {
    let phone = Phone::from_e164("+8613800138000").unwrap();
    let params = vec![which.to_owned()];
    f(&HookInput {
        tenant: "hostile",
        phone: Some(&phone),
        raw_phone: "+8613800138000",
        usage: "SignIn",
        code: None,
        params: &params,
        providers: None,
        ip: None,
        locale: None,
        request_id: Some("inline"),
        log_budget: None,
    })
}

/// Only the inline attempt of a call whose first param is `which`.
fn inline(hook: &ScriptHook, which: &str) -> SliceOutcome {
    with_input(which, |input| hook.call_inline(input))
}

/// The call with its whole budget, on this thread.
fn whole(hook: &ScriptHook, which: &str) -> Result<RawVerdict, String> {
    with_input(which, |input| hook.call(input))
}

/// Runs every door in `names` and checks each ended the call with a budget or deadline error. The memory
/// budget counts as one: `compare` builds two copies of a 4 MiB string under an 8 MiB budget, which ends on
/// the memory limit or the deadline depending on how much of the budget `req` itself takes (a field more,
/// such as `req.providers`, tips it).
async fn all_cut_off(gw: &TestGateway, names: &[&str]) {
    for which in names {
        let d = detail(gw, "hostile", which).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(cut_off(&d) || d.contains("memory limit exceeded"), "{which}: {d}");
        assert!(d.starts_with("scripts/hostile.lua"), "{which}: {d}");
    }
}

// One thread serves the gateway and the test (as `server.workers: 1`): a call that held it would stall all.
#[tokio::test(flavor = "current_thread")]
async fn regression_xpcall_handler_cannot_escape_the_budget() {
    let (_mock, gw, _dir) = hooks::gateway(&tenants(DOORS, "")).await;
    // The issue's example, twice at once and then some: each request fails alone, the gateway goes on.
    let (a, b, c, d) = tokio::join!(
        send(&gw, HOSTILE_TOKEN, "issue"),
        send(&gw, HOSTILE_TOKEN, "issue"),
        send(&gw, HOSTILE_TOKEN, "issue"),
        send(&gw, HOSTILE_TOKEN, "issue")
    );
    for answer in [a, b, c, d] {
        answer.assert_error(500, "script_error");
    }
    healthy(&gw).await;
    // The budget runs out in `spin`; Lua then calls the handler with hooks off. It must not run at all.
    send(&gw, HOSTILE_TOKEN, "handler_then_mark").await.assert_error(500, "script_error");
    let check = send(&gw, HOSTILE_TOKEN, "check").await;
    assert_eq!(check.status, 200, "{:#}", check.json);
    all_cut_off(
        &gw,
        &[
            "issue",
            "finite_handler",
            "handler_then_mark",
            "nested_handlers",
            "handler_in_handler",
            "handler_pcall",
            "pcall_loop",
            "xpcall_loop",
        ],
    )
    .await;
    healthy(&gw).await;
}

#[tokio::test(flavor = "current_thread")]
async fn regression_metamethods_and_iterators_cannot_escape_the_budget() {
    let (_mock, gw, _dir) = hooks::gateway(&tenants(DOORS, "")).await;
    all_cut_off(
        &gw,
        &[
            "index", "newindex", "call", "tostring", "eq", "lt", "le", "concat", "len", "unm", "add", "pairs",
            "iterator",
        ],
    )
    .await;
    for which in ["close", "close_same_frame", "close_added_later", "close_in_for"] {
        let d = detail(&gw, "hostile", which).await.unwrap();
        assert!(
            d.contains("__close metamethods are not available") || d.contains("non-closable value"),
            "{which}: {d}"
        );
    }
    healthy(&gw).await;
}

#[tokio::test(flavor = "current_thread")]
async fn regression_library_callbacks_and_error_objects_cannot_escape_the_budget() {
    let (_mock, gw, _dir) = hooks::gateway(&tenants(DOORS, "")).await;
    all_cut_off(
        &gw,
        &[
            "sort",
            "sort_lt",
            "sort_c_comparator",
            "gsub_function",
            "gsub_table",
            "gmatch",
            "format",
            "concat_index",
            "error_object_caught",
            "error_object_handler",
        ],
    )
    .await;
    // An error object that is not a string is named by its type: its own __tostring never runs on the way
    // out (it would spin here).
    let source =
        r#"function on_send(req) error(setmetatable({}, {__tostring = function() while true do end end})) end"#;
    let (_mock, gw, _dir) = hooks::gateway(&tenants(source, "")).await;
    let d = detail(&gw, "hostile", "x").await.unwrap();
    assert_eq!(d, "scripts/hostile.lua: (error object is a table value)");
    healthy(&gw).await;
}

/// C library functions do work that no instruction count sees: each is charged for what it does.
const COSTLY: &str = r##"
local BIG = string.rep("a", 4 * 1024 * 1024)
local MID = BIG:sub(1, 1024 * 1024)
local EVIL = ("a?"):rep(23) .. ("a"):rep(23) .. "b"

local doors = {
  plain_find = function() for i = 1, 20000 do BIG:find("b", 1, true) end end,
  find_without_specials = function() for i = 1, 20000 do BIG:find("ab") end end,
  backtracking_find = function() return ("a"):rep(23):find(EVIL) end,
  backtracking_match = function() return ("a"):rep(23):match(EVIL) end,
  backtracking_gmatch = function() for _ in ("a"):rep(23):gmatch(EVIL) do end end,
  backtracking_gsub = function() return ("a"):rep(23):gsub(EVIL, "") end,
  lazy_scan = function() for i = 1, 1000 do BIG:find("a-b") end end,
  balance = function() for i = 1, 1000 do BIG:match("%b()") end end,
  gsub_big = function() for i = 1, 1000 do BIG:gsub("a", "b") end end,
  rep = function() for i = 1, 1e6 do local s = ("x"):rep(100000) end end,
  rep_pieces = function() for i = 1, 1e6 do local s = ("x"):rep(100000, ",") end end,
  concat = function()
    local t = {} for i = 1, 64 do t[i] = BIG:sub(1, 16384) end
    for i = 1, 1e6 do table.concat(t) end
  end,
  sort = function() local t = {} for i = 1, 50000 do t[i] = (i * 7919) % 50021 end table.sort(t) end,
  unpack = function() local t = {} for i = 1, 5000 do t[i] = i end for i = 1, 1e6 do select("#", table.unpack(t)) end end,
  select = function()
    local function f(...) local n = 0 for i = 1, select("#", ...) do n = n + select(i, ...) end return n end
    local t = {} for i = 1, 5000 do t[i] = i end
    for i = 1, 1e6 do f(table.unpack(t)) end
  end,
  insert_front = function() local t = {} for i = 1, 1e6 do table.insert(t, 1, i) end end,
  remove_front = function() local t = {} for i = 1, 20000 do t[i] = i end while true do table.remove(t, 1) t[#t + 1] = 1 end end,
  move = function() local t = {} for i = 1, 20000 do t[i] = i end for i = 1, 1e6 do table.move(t, 1, #t, 2) end end,
  upper = function() for i = 1, 1e6 do BIG:upper() end end,
  reverse = function() for i = 1, 1e6 do BIG:reverse() end end,
  sub = function() for i = 1, 1e6 do BIG:sub(2) end end,
  byte = function() for i = 1, 1e6 do BIG:byte(1, 100000) end end,
  char = function() local t = {} for i = 1, 5000 do t[i] = 65 end for i = 1, 1e6 do string.char(table.unpack(t)) end end,
  format = function() for i = 1, 1e6 do string.format("%s%s", MID, "x") end end,
  pack = function() for i = 1, 1e6 do string.pack("c1000000", "") end end,
  tonumber = function() local s = ("0"):rep(1000000) for i = 1, 1e6 do tonumber(s) end end,
  utf8_len = function() for i = 1, 1e6 do utf8.len(BIG) end end,
  utf8_codepoint = function() for i = 1, 1e6 do utf8.codepoint(BIG, 1, 100000) end end,
  parse_phone = function() while true do smsgate.parse_phone("+8613800138000") end end,
  -- VM operations on big strings are bounded by the deadline (and the memory budget).
  compare = function() local other = BIG:sub(1, -2) .. "b" while true do local _ = BIG < other end end,
  concat_vm = function() while true do local s = BIG .. "x" end end,
}

function on_send(req)
  local door = doors[req.params[1]]
  if door then return door() end
end
"##;

#[tokio::test(flavor = "current_thread")]
async fn regression_costly_library_calls_end_with_the_budget() {
    let (_mock, gw, _dir) = hooks::gateway(&tenants(COSTLY, "    script_limits: { memory: 8MiB }")).await;
    all_cut_off(
        &gw,
        &[
            "plain_find",
            "find_without_specials",
            "backtracking_find",
            "backtracking_match",
            "backtracking_gmatch",
            "backtracking_gsub",
            "lazy_scan",
            "balance",
            "gsub_big",
            "rep",
            "rep_pieces",
            "concat",
            "sort",
            "unpack",
            "select",
            "insert_front",
            "remove_front",
            "move",
            "upper",
            "reverse",
            "sub",
            "byte",
            "char",
            "format",
            "tonumber",
            "utf8_len",
            "utf8_codepoint",
            "parse_phone",
            "compare",
            "concat_vm",
        ],
    )
    .await;
    // string.pack's output is bounded before it is built: 1 MB of padding per call.
    let d = detail(&gw, "hostile", "pack").await.unwrap();
    assert!(cut_off(&d) || d.contains("memory limit exceeded"), "{d}");
    healthy(&gw).await;
    // A script that keeps strings longer than a slice may allocate never runs inline: one instruction on
    // them (`<`, `..`) could hold the worker too long between two looks at the clock.
    let tenant = gw.gateway.runtime().tenant("hostile").unwrap().clone();
    let paths = tenant.script.as_ref().unwrap().call_paths();
    assert_eq!((paths.inline, paths.overruns), (0, 0), "{paths:?}");
    assert!(paths.pooled >= 31, "{paths:?}");
}

/// Costly shapes on strings a slice may touch (the script keeps 30 KB).
const COSTLY_SMALL: &str = r##"
local S = ("a"):rep(30000)
local EVIL = ("a?"):rep(23) .. ("a"):rep(23) .. "b"
local doors = {
  plain_find = function() for i = 1, 20000 do S:find("b", 1, true) end end,
  lazy_scan = function() for i = 1, 1000 do S:find("a-b") end end,
  backtracking_find = function() return ("a"):rep(23):find(EVIL) end,
  backtracking_gsub = function() return ("a"):rep(23):gsub(EVIL, "") end,
  rep = function() for i = 1, 1e6 do local s = ("x"):rep(30000) end end,
  upper = function() for i = 1, 1e6 do S:upper() end end,
  sort = function() table.sort({ 5, 3, 1, 4, 2 }, function(a, b) while true do end end) end,
  parse_phone = function() while true do smsgate.parse_phone("+8613800138000") end end,
  compare = function() local other = S:sub(1, -2) .. "b" while true do local _ = S < other end end,
  concat_vm = function() while true do local s = S .. "x" end end,
  gc = function() setmetatable({}, { __gc = function() while true do end end }) end,
}

function on_send(req)
  local door = doors[req.params[1]]
  if door then return door() end
end
"##;

/// Every door tried inline, as the gateway tries a call first: each ends within the slice (its own
/// instructions, clock or memory, not the call's budget of 100,000,000 instructions and 1 s), and its
/// state is dropped. What the slice lets through is an answer the whole call would give too.
#[tokio::test(flavor = "current_thread")]
async fn regression_hostile_doors_end_within_the_inline_slice() {
    let extra = "    script_limits: { instructions: 100000000, time: 1s }";
    let (_mock, gw, _dir) = hooks::gateway(&tenants(DOORS, extra)).await;
    let tenant = gw.gateway.runtime().tenant("hostile").unwrap().clone();
    let hook = tenant.script.as_ref().unwrap();
    all_cut_off_inline(
        hook,
        &[
            "issue",
            "finite_handler",
            "nested_handlers",
            "handler_in_handler",
            "handler_then_mark",
            "handler_pcall",
            "pcall_loop",
            "xpcall_loop",
            "index",
            "newindex",
            "call",
            "tostring",
            "eq",
            "lt",
            "le",
            "concat",
            "len",
            "unm",
            "add",
            "pairs",
            "iterator",
            "sort",
            "sort_lt",
            "sort_c_comparator",
            "gsub_function",
            "gsub_table",
            "gmatch",
            "format",
            "concat_index",
            "error_object_caught",
            "error_object_handler",
        ],
    );
    // The handler that ran past a cut-off would have marked its state; no state shows the mark.
    assert_eq!(inline(hook, "check"), SliceOutcome::Answered(whole(hook, "check")));
    for which in ["close", "close_same_frame", "close_added_later", "close_in_for"] {
        let SliceOutcome::Answered(Err(d)) = inline(hook, which) else { panic!("{which}: an error") };
        assert!(
            d.contains("__close metamethods are not available") || d.contains("non-closable value"),
            "{which}: {d}"
        );
    }

    let (_mock, gw, _dir) = hooks::gateway(&tenants(COSTLY_SMALL, extra)).await;
    let tenant = gw.gateway.runtime().tenant("hostile").unwrap().clone();
    let hook = tenant.script.as_ref().unwrap();
    all_cut_off_inline(
        hook,
        &[
            "plain_find",
            "lazy_scan",
            "backtracking_find",
            "backtracking_gsub",
            "rep",
            "upper",
            "sort",
            "parse_phone",
            "compare",
            "concat_vm",
        ],
    );
    let SliceOutcome::Answered(Err(d)) = inline(hook, "gc") else { panic!("gc: an error") };
    assert!(d.contains("__gc metamethods are not available"), "{d}");
    // Through the real path, on this one thread (a fresh gateway, whose gate is open): the first call
    // tries inline and overruns, the call is made again on a hook thread and ends with the call's own
    // deadline; the calls after it go straight there; the gateway answers meanwhile.
    let (_mock, gw, _dir) = hooks::gateway(&tenants(COSTLY_SMALL, extra)).await;
    let tenant = gw.gateway.runtime().tenant("hostile").unwrap().clone();
    let hook = tenant.script.as_ref().unwrap();
    let before = hook.call_paths();
    let (flooded, ()) = tokio::join!(
        async {
            let (a, b, c) = tokio::join!(
                send(&gw, HOSTILE_TOKEN, "compare"),
                send(&gw, HOSTILE_TOKEN, "compare"),
                send(&gw, HOSTILE_TOKEN, "compare")
            );
            [a, b, c]
        },
        healthy(&gw)
    );
    for answer in flooded {
        // Each runs 1 s on the tenant's share of the hook threads: the last may find it still taken.
        assert!(matches!(answer.error_code(), "script_error" | "script_busy"), "{:#}", answer.json);
    }
    let after = hook.call_paths();
    assert_eq!(after.overruns - before.overruns, 1, "the first tried inline: {before:?} {after:?}");
    assert_eq!(after.pooled - before.pooled, 3, "{before:?} {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_would_run_forever_ends_with_the_deadline_error() {
    let source = r#"
local BIG = string.rep("a", 256 * 1024)
function on_send(req)
  if req.params[1] == "spin" then while true do end end
  if req.params[1] == "compare" then local other = BIG:sub(1, -2) .. "b" while true do local _ = BIG < other end end
  if req.params[1] == "handler" then xpcall(error, function() while true do end end) end
end
"#;
    // An instruction budget far beyond what 5 ms can run: only the deadline can end these calls.
    let extra = "    script_limits: { instructions: 100000000, time: 5ms }";
    let (_mock, gw, _dir) = hooks::gateway(&tenants(source, extra)).await;
    for which in ["spin", "compare", "handler"] {
        let d = detail(&gw, "hostile", which).await.unwrap();
        assert!(d.contains("time limit exceeded (5ms per call)"), "{which}: {d}");
    }
    send(&gw, HOSTILE_TOKEN, "spin").await.assert_error(500, "script_error");
    healthy(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_cut_off_state_is_never_reused() {
    // Each door leaves the state's top-level table corrupted, then is cut off; a state that served again
    // would refuse every later request.
    let source = r#"
local state = { corrupted = false }
local function corrupt() state.corrupted = true end
function on_send(req)
  if state.corrupted then return { reject = "a corrupted state served again" } end
  local which = req.params[1]
  if which == "budget" then corrupt() while true do end end
  if which == "caught" then corrupt() pcall(function() while true do end end) end
  if which == "memory" then corrupt() local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(4096) end end
  if which == "memory_caught" then
    corrupt() pcall(function() local t = {} for i = 1, 1e9 do t[i] = {} end end)
  end
  if which == "deadline" then corrupt() local s = ("x"):rep(1000) while true do local _ = s < s .. "y" end end
end
"#;
    let extra = "    script_limits: { time: 50ms }";
    let (mock, gw, _dir) = hooks::gateway(&tenants(source, extra)).await;
    let hook_of = || gw.gateway.runtime().tenant("hostile").unwrap().clone();
    for which in ["budget", "caught", "memory", "memory_caught", "deadline"] {
        send(&gw, HOSTILE_TOKEN, which).await.assert_error(500, "script_error");
        for _ in 0..3 {
            let a = send(&gw, HOSTILE_TOKEN, "fine").await;
            assert_eq!(a.status, 200, "after {which}: {:#}", a.json);
        }
        let tenant = hook_of();
        assert!(tenant.script.as_ref().unwrap().pooled() >= 1, "after {which}: the pool refills");
    }
    assert_eq!(mock.seen().len(), 15);
    let d = detail(&gw, "hostile", "memory").await.unwrap();
    assert!(d.contains("memory limit exceeded"), "{d}");
}

/// The real binary: hostile hooks spinning in their handlers while the process is asked to stop. Before
/// the hook threads, the spinning hooks held every async worker and only SIGKILL stopped the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_sigterm_stops_the_process_while_hostile_hooks_run() {
    let source = "function on_send(req) xpcall(error, function() while true do end end) end";
    let dir = tempfile::tempdir().unwrap();
    let extra = "    script_limits: { instructions: 100000000, time: 1s }";
    let tenants = tenants(source, extra);
    hooks::write_scripts(dir.path(), &tenants);
    let mock = crate::common::mock::MockTencent::start(SECRET_KEY).await;
    let script_dir = format!("{}/", dir.path().display());
    // One async worker: the hostile calls try it first, inline, within a slice.
    let yaml = hooks::yaml(&mock.endpoint(), "127.0.0.1:0", &script_dir, &tenants).replacen(
        "server:\n",
        "server:\n  workers: 1\n",
        1,
    );
    let mut server = Server::spawn(&yaml, &[("ACME_SECRET", SECRET_KEY)]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let post = |token: &'static str, body: String| {
        let request = http
            .post(server.url("/v1/sms/send"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        async move { Answer::from(request.send().await.expect("the gateway answers")).await }
    };
    let hostile: Vec<_> = (0..6).map(|_| tokio::spawn(post(HOSTILE_TOKEN, hooks::body("x")))).collect();
    // While they spin, the gateway answers.
    let health = http.get(server.url("/healthz")).send().await.expect("healthz answers");
    assert_eq!(health.status(), 200);
    let plain = post(PLAIN_TOKEN, native("+8613800138001", "SignIn", "123456")).await;
    assert_eq!(plain.status, 200, "{:#}", plain.json);

    server.signal("TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    for answer in hostile {
        // Answered before the process exited: the call's deadline ended it, or it never got a thread.
        let answer = answer.await.unwrap();
        assert!(matches!(answer.error_code(), "script_error" | "script_busy"), "{} {:#}", answer.status, answer.json);
    }
}
