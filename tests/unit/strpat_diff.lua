-- strpat_diff.lua: differential test of P (rbl_strpat) against stock string.find/match/gmatch/gsub.
local P = assert(P, "driver must set global P")
local S = string

local function pack(...) return { n = select("#", ...), ... } end

-- Replacement helpers; pure functions so both libraries see identical input.
local function fcat(...)
  local t = pack(...)
  for i = 1, t.n do t[i] = math.type(t[i]) or tostring(t[i]) end
  local out = {}
  for i = 1, t.n do out[i] = tostring((select(i, ...))) .. ":" .. t[i] end
  return "<" .. table.concat(out, ",") .. ">"
end
local function fnil() return nil end
local function ffalse(x) if x == "a" then return false end return "Z" end
local function fnum(...) return select("#", ...) end
local function fbad() return {} end
local repl_tab = { a = "A", b = false, ["("] = 7, [1] = "one", [2] = "two", ab = "AB" }

local function ser(v)
  local t = type(v)
  if t == "string" then return S.format("%q", v) end
  if t == "number" then return math.type(v) .. ":" .. tostring(v) end
  return t .. ":" .. tostring(v)
end

local function norm_err(e)
  e = tostring(e)
  -- Function names differ ('string.find' vs 'find'); messages must not.
  return (e:gsub("bad argument #(%d+) to '[^']*'", "bad argument #%1"))
end

-- Runs one operation against lib and returns a canonical string.
local function run(lib, op, a)
  local ok, res
  if op == "gmatch" then
    ok, res = pcall(function()
      local out, it = {}, lib.gmatch(a[1], a[2], a[3])
      for _ = 1, 200 do
        local r = pack(it())
        if r[1] == nil then break end
        local parts = {}
        for i = 1, r.n do parts[i] = ser(r[i]) end
        out[#out + 1] = "{" .. table.concat(parts, ",") .. "}"
      end
      return table.concat(out, " ")
    end)
  else
    ok, res = pcall(function()
      local r = pack(lib[op](table.unpack(a, 1, a.n)))
      local parts = {}
      for i = 1, r.n do parts[i] = ser(r[i]) end
      return table.concat(parts, ",")
    end)
  end
  if ok then return "ok " .. res end
  return "err " .. norm_err(res)
end

local ncases, nfail = 0, 0
local function check(op, ...)
  local a = pack(...)
  ncases = ncases + 1
  local want = run(S, op, a)
  local got = run(P, op, a)
  if want ~= got then
    nfail = nfail + 1
    if nfail <= 30 then
      local shown = {}
      for i = 1, a.n do shown[i] = ser(a[i]) end
      io.stderr:write(S.format("MISMATCH %s(%s)\n  stock: %s\n  ours:  %s\n",
        op, table.concat(shown, ", "), want, got))
    end
  end
end

---------------------------------------------------------------- hand cases
local hand = {
  -- find: init handling and plain
  { "find", "hello", "l" }, { "find", "hello", "l", 4 }, { "find", "hello", "l", -1 },
  { "find", "hello", "l", -2 }, { "find", "hello", "l", 0 }, { "find", "hello", "", 6 },
  { "find", "hello", "", 7 }, { "find", "hello", "", 100 }, { "find", "hello", "", -100 },
  { "find", "hello", "", 0 }, { "find", "", "" }, { "find", "", "", 1 }, { "find", "", "", 2 },
  { "find", "a.b", ".", 1, true }, { "find", "a.b", "%.", 1 }, { "find", "a+b", "+", 1, true },
  { "find", "a+b", "a+b", 1, true }, { "find", "a+b", "a+b" }, { "find", "x(y", "(", 1, 1 },
  { "find", "x(y", "(", 1, false }, { "find", "abc", "c", -1, true }, { "find", "abc", "abcd", 1, true },
  { "find", "a)b", "a)" }, { "find", "a]b", "]" }, { "find", 12345, 34 }, { "find", 1.5, "%." },
  { "find", "aaa", "a", 2.0 }, { "find", "aaa", "a", 2.5 }, { "find", "aaa", "a", "2" },
  { "find", "aaa" }, { "find", nil, "a" }, { "find", {}, "a" },
  { "find", "a\0b\0c", "\0" }, { "find", "a\0b\0c", "b\0c" }, { "find", "a\0b\0c", "%z" },
  { "find", "a\0b\0c", "[\0]" }, { "find", "a\0b\0c", "[^%z]+" }, { "find", "a\0b", "%c" },
  { "find", "a\0b\0c", "\0.\0" }, { "find", "ab\0", "\0$" },
  -- anchors
  { "find", "aaa", "^a" }, { "find", "baa", "^a" }, { "find", "baa", "^a", 2 },
  { "find", "abc", "c$" }, { "find", "abc$", "c$" }, { "find", "abc$", "c%$" }, { "find", "a$b", "$b" },
  { "find", "^a", "^^a" }, { "find", "a^", "a^" }, { "match", "", "^$" }, { "match", "x", "^$" },
  { "match", "abc", "^(a)(b)" }, { "match", "abc", "$" }, { "match", "abc", "^" },
  -- classes
  { "match", "  \t12abcXYZ!?", "%s+" }, { "match", "abc123", "%d+" }, { "match", "abc123", "%a+" },
  { "match", "abc123", "%w+" }, { "match", "abc123", "%D+" }, { "match", "aBc", "%u" },
  { "match", "ABc", "%l" }, { "match", "x!,y", "%p+" }, { "match", "deadBEEFz", "%x+" },
  { "match", "a b", "%S+" }, { "match", "a b", "%G" }, { "match", "\1\2a", "%C" },
  { "match", "ab.c", "%W" }, { "match", "abc", "%X" }, { "match", "abAB", "%U+" },
  { "match", "abAB", "%L+" }, { "match", "a.b", "%P+" }, { "match", "ab12", "%A+" },
  { "match", "z%Z", "%Z" }, { "match", "q", "%q" }, { "match", "%", "%%" }, { "match", "a.", "%." },
  { "match", "\200\255", "." }, { "match", "\200\255", "[\128-\255]+" },
  -- sets
  { "match", "abcdef", "[b-d]+" }, { "match", "a-z", "[a-]+" }, { "match", "a-z", "[-a]+" },
  { "match", "]]a", "[]]+" }, { "match", "^^a", "[\\^]+" }, { "match", "^^a", "[%^]+" },
  { "match", "ab^", "[^^]+" }, { "match", "x]y", "[^]]+" }, { "match", "a1_", "[%a_]+" },
  { "match", "a1_", "[%d%a]+" }, { "match", "a%b", "[%%]" }, { "match", "a]b", "[%]]" },
  { "match", "a-b", "[a%-b]+" }, { "match", "a", "[a-%]]" }, { "match", "]", "[a-%]]" },
  { "match", "z", "[z-a]" }, { "match", "abc", "[]" }, { "match", "abc", "[^]" },
  { "match", "abc", "[a" }, { "match", "abc", "[a%" }, { "match", "abc", "[%]" },
  { "match", "abc", "[^" }, { "match", "abc", "[" }, { "match", "b", "x[" }, { "match", "x", "x[" },
  { "match", "a-", "[%a-]+" }, { "match", "a-z", "[%a-z]+" },
  -- quantifiers
  { "match", "aaab", "a*" }, { "match", "aaab", "a-b" }, { "match", "aaab", "a+" },
  { "match", "aaab", "a?a?a?a?b" }, { "match", "b", "a?b" }, { "match", "ab", "a-" },
  { "match", "ab", "*a" }, { "match", "*a", "*a" }, { "match", "a**", "a**" }, { "match", "+", "+" },
  { "match", "-", "-" }, { "match", "?", "?" }, { "match", "<a><b>", "<.->" }, { "match", "<a><b>", "<.*>" },
  { "match", "aaa", "a-$" }, { "match", "aaa", ".-" }, { "match", "xaaay", "a+y" },
  { "match", "key = value", "(%w+)%s*=%s*(%w+)" }, { "match", "  trim  ", "^%s*(.-)%s*$" },
  -- captures
  { "match", "hello", "()ll()" }, { "find", "hello", "()ll()" }, { "match", "hello", "(h)(e)(l)(l)(o)" },
  { "match", "hello", "((h)(e))" }, { "match", "hello", "(" }, { "match", "hello", ")" },
  { "match", "hello", "(h" }, { "match", "xy", "(h" }, { "match", "hello", "h)" }, { "match", "hello", "()" },
  { "find", "hello", "()" }, { "find", "hello", "(l)(l)" }, { "match", "abc", "(()" },
  { "match", "a", S.rep("(", 32) .. "a" .. S.rep(")", 32) },
  { "match", "a", S.rep("(", 33) .. "a" .. S.rep(")", 33) },
  { "match", "a", S.rep("()", 32) }, { "match", "a", S.rep("()", 33) },
  -- back-references
  { "match", "abab", "(ab)%1" }, { "match", "abac", "(ab)%1" }, { "match", "aa", "(a)%2" },
  { "match", "aa", "%1" }, { "match", "aa", "%0" }, { "match", "aa", "(a%1)" },
  { "match", "xaax", "(.)(.)%2%1" }, { "match", "'hi' \"x\"", "([\"'])(.-)%1" },
  { "match", "aa", "()%1" }, { "match", "abcabc", "(a(b)c)%1%2" }, { "match", "a", "(a)%9" },
  -- %b and %f
  { "match", "f(a(b)c)d", "%b()" }, { "match", "f(a(bc)d", "%b()" }, { "match", "xaax", "%bxx" },
  { "match", "abc", "%b" }, { "match", "abc", "%ba" }, { "match", "", "%bab" }, { "match", "[[x]]", "%b[]" },
  { "match", "(()", "%b()*" }, { "match", "()*", "%b()*" },
  { "find", "THE (quick) fox", "%f[%a]%a+" }, { "find", "THE (quick) fox", "%f[%a]%a+", 5 },
  { "match", "hello world", "%f[%w]%w+$" }, { "match", "abc", "%f[%z]" }, { "find", "abc", "%f[%z]" },
  { "find", "abc", "%f[^%z]" }, { "match", "abc", "%f" }, { "match", "abc", "%fa" }, { "match", "abc", "%f[a" },
  { "find", "aXb", "%f[%u]" }, { "find", "a", "%f[a]" }, { "find", "\0a", "%f[%z]" },
  -- malformed
  { "match", "a", "a%" }, { "match", "b", "a%" }, { "match", "a", "%" }, { "find", "a", "%" },
  { "match", "", "%" }, { "match", "aaa", "a*%" }, { "gsub", "a", "%", "x" },
  { "match", S.rep("a", 300), S.rep("a?", 300) }, { "match", S.rep("a", 300), S.rep("a?", 198) },
  { "match", S.rep("a", 300), S.rep("a?", 199) }, { "match", S.rep("a", 300), S.rep("a?", 200) },
  { "match", S.rep("a", 10), S.rep("a*", 250) }, { "match", "b", S.rep("a*", 250) .. "b" },
  -- match with init
  { "match", "abcabc", "b", 3 }, { "match", "abcabc", "^b", 2 }, { "match", "abc", "", 4 },
  { "match", "abc", "", 5 }, { "match", "abc", "c", -1 }, { "match", "abc", "()", -100 },
  -- gmatch
  { "gmatch", "hello world from lua", "%a+" }, { "gmatch", "k=v, a=b", "(%w+)=(%w+)" },
  { "gmatch", "abc", "" }, { "gmatch", "abc", "()" }, { "gmatch", "abc", ".-" }, { "gmatch", "abc", "a*" },
  { "gmatch", "^a^a", "^a" }, { "gmatch", "aaa", "^a" }, { "gmatch", "abc", "%a", 2 },
  { "gmatch", "abc", "%a", -1 }, { "gmatch", "abc", "%a", 10 }, { "gmatch", "abc", "", 4 },
  { "gmatch", "abc", "", 5 }, { "gmatch", "abc", "", 0 }, { "gmatch", "abc", "", -10 },
  { "gmatch", "a,b,,c", "([^,]*)" }, { "gmatch", "abc", "(" }, { "gmatch", "xyz", "a%" },
  { "gmatch", "a%", "a%" }, { "gmatch", 123, "%d" }, { "gmatch", "a\0b", "[^\0]" },
  -- gsub
  { "gsub", "hello world", "o", "0" }, { "gsub", "hello world", "o", "0", 1 },
  { "gsub", "hello world", "o", "0", 0 }, { "gsub", "hello world", "o", "0", -1 },
  { "gsub", "hello", "", "-" }, { "gsub", "hello", "x*", "-" }, { "gsub", "abc", "%w", "%0%0" },
  { "gsub", "abc", "%w", "%1" }, { "gsub", "abc", "%w", "%2" }, { "gsub", "abc", "(%w)", "%1%1" },
  { "gsub", "abc", "()", "%1" }, { "gsub", "abc", "(b)()", "%2%1" }, { "gsub", "abc", "b", "%%" },
  { "gsub", "abc", "b", "%" }, { "gsub", "abc", "b", "%x" }, { "gsub", "abc", "b", "100%" },
  { "gsub", "abc", "b", 5 }, { "gsub", "abc", "b", 5.5 }, { "gsub", "abc", "b" }, { "gsub", "abc", "b", true },
  { "gsub", "abc", "x", true }, { "gsub", "hello world", "%w+", fcat }, { "gsub", "hello world", "(%w)(%w*)", fcat },
  { "gsub", "hello", "()l", fcat }, { "gsub", "hello", "l", fnil }, { "gsub", "abab", "%w", ffalse },
  { "gsub", "abab", "%w", fnum }, { "gsub", "abab", "%w", fbad }, { "gsub", "a(b", "%w", repl_tab },
  { "gsub", "a(b", ".", repl_tab }, { "gsub", "abab", "(a)(b)", repl_tab }, { "gsub", "abab", "()a", repl_tab },
  { "gsub", "abab", "^a", "x" }, { "gsub", "abab", "^", "x" }, { "gsub", "abab", "$", "x" },
  { "gsub", "abab", "^b", "x" }, { "gsub", "", "", "x" }, { "gsub", "", "^", "x" },
  { "gsub", "abc", ".-", "x" }, { "gsub", "abc", "b*", "-" }, { "gsub", "a\0b", "\0", "%%0" },
  { "gsub", "a\0b", "%z", "<%0>" }, { "gsub", "one two", "(%w+) (%w+)", "%2 %1" },
  { "gsub", "abc", "(b", "x" }, { "gsub", "abc", "b)", "x" }, { "gsub", "xyz", "(b", "x" },
  { "gsub", "abc", "b", "x", 1.5 }, { "gsub", "abc", "b", "x", "1" }, { "gsub", 12321, 2, 9 },
  { "gsub", "abc", "%w", "%9" }, { "gsub", "abc", "(a)", "%0%1%2" },
}
for _, c in ipairs(hand) do
  -- nil holes in cases (e.g. {"find", nil, "a"}) are kept by using maxn-like n
  local n = 1
  for k in pairs(c) do if k > n then n = k end end
  check(c[1], table.unpack(c, 2, n))
end
local nhand = ncases

--------------------------------------------------------------- random cases
local tokens = {
  "a", "b", "c", "a", "b", "x", ".", "%a", "%d", "%s", "%w", "%A", "%p", "%x", "%u", "%l", "%c",
  "%g", "%S", "%.", "%%", "%z", "%", "[ab]", "[^ab]", "[a-c]", "[%d%a]", "[]", "[^]", "[", "]",
  "[a-]", "[%]", "[]a]", "(", ")", "()", "(a)", "(.-)", "*", "+", "-", "?", "^", "$", "%1", "%2",
  "%0", "%b()", "%bab", "%b", "%f[%a]", "%f[^a]", "%f[%z]", "%f", "%fa", "\0", "1", " ", "a*",
  "b+", ".-", ".*", "a?", "[ab]*",
}
local salpha = { "a", "b", "c", "a", "b", "x", "(", ")", ".", " ", "1", "2", "A", "\0", "-", "[", "]",
  "%", "^", "$", "\n", "\200" }
local repls = { "x", "%0", "%1", "%2", "%%", "%", "<%1|%0>", "", "%a", "9%" }
local funcs = { fcat, fnil, ffalse, fnum, repl_tab }

-- Fixed seed for CI; STRPAT_SEED/STRPAT_N allow longer local fuzzing runs.
math.randomseed(tonumber(os.getenv("STRPAT_SEED")) or 20240601)
local R = math.random
local function rpat()
  local t = {}
  for i = 1, R(0, 7) do t[i] = tokens[R(#tokens)] end
  return table.concat(t)
end
local function rsubj()
  local t = {}
  for i = 1, R(0, 12) do t[i] = salpha[R(#salpha)] end
  return table.concat(t)
end
local function rinit(s)
  local k = R(10)
  if k <= 6 then return nil end
  return R(-#s - 2, #s + 2)
end

local NRANDOM = tonumber(os.getenv("STRPAT_N")) or 30000
for _ = 1, NRANDOM do
  local op = R(4)
  local s, p = rsubj(), rpat()
  if op == 1 then
    local plain = R(6) == 1
    if plain then check("find", s, p, rinit(s) or 1, true) else check("find", s, p, rinit(s)) end
  elseif op == 2 then
    check("match", s, p, rinit(s))
  elseif op == 3 then
    check("gmatch", s, p, rinit(s))
  else
    local r
    if R(3) == 1 then r = funcs[R(#funcs)] else r = repls[R(#repls)] end
    if R(4) == 1 then check("gsub", s, p, r, R(-1, 3)) else check("gsub", s, p, r) end
  end
end

print(S.format("strpat_diff: %d hand-written + %d random cases, %d mismatches",
  nhand, ncases - nhand, nfail))
if nfail > 0 then error(S.format("%d mismatches", nfail)) end
