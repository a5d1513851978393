-- Generator for the drift benchmark: two documents of about N leaves that differ in a
-- handful of known places, from a fixed seed. Usable as a module (tables) or a script
-- writing JSON:  lua5.4 bench/drift_bench_gen.lua LEAVES OUT_A OUT_B
local M = {}

-- The changes applied to the second document; drift.compare must report exactly these.
M.changes = {
  { path = "tenants[name=tenant-0007].config.max_connections", op = "changed" },
  { path = "tenants[name=tenant-0042].containers[name=app-2].image", op = "changed" },
  { path = "tenants[name=tenant-0101].containers[name=app-0].ports[containerPort=8443].protocol", op = "changed" },
  { path = "tenants[name=tenant-0150].config.key_17", op = "missing" },
  { path = "tenants[name=tenant-0200].config.debug", op = "unexpected" },
  { path = "tenants[name=tenant-0003].containers[name=app-4].env[name=ENV_5]", op = "missing" },
}

local function lcg(seed)
  local s = seed
  return function(n)
    s = (s * 1103515245 + 12345) % 2147483648
    return s % n + 1
  end
end

-- Leaves per tenant: name 1 + config 40 + 5 containers x (name, image, 10 env x 2,
-- 2 ports x 2, 4 resources) = 191.
local PER_TENANT = 191

function M.build(leaves, seed)
  local rand = lcg(seed or 42)
  local tenants = {}
  for t = 0, math.max(1, math.ceil(leaves / PER_TENANT)) - 1 do
    local config = {}
    for k = 0, 39 do config["key_" .. k] = (rand(3) == 1) and ("v" .. rand(1000)) or rand(100000) end
    config.max_connections = 100 + rand(400)
    config.key_0 = nil
    local containers = {}
    for c = 0, 4 do
      local env = {}
      for e = 0, 9 do env[#env + 1] = { name = "ENV_" .. e, value = tostring(rand(1000)) } end
      containers[#containers + 1] = {
        name = "app-" .. c,
        image = "registry.example.com/app:" .. rand(30) .. "." .. rand(10),
        env = env,
        ports = { { containerPort = 8080, protocol = "TCP" }, { containerPort = 8443, protocol = "TCP" } },
        resources = { limits = { cpu = "1", memory = "512Mi" }, requests = { cpu = "250m", memory = "256Mi" } },
      }
    end
    tenants[#tenants + 1] = { name = string.format("tenant-%04d", t), config = config, containers = containers }
  end
  return { apiVersion = "bench/v1", tenants = tenants }
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

-- The expected document and the actual one (a copy with M.changes applied).
function M.pair(leaves, seed)
  local expected = M.build(leaves, seed)
  local actual = copy(expected)
  local t = actual.tenants
  local function tenant(i) return t[i + 1] end
  if #t > 200 then
    tenant(7).config.max_connections = tenant(7).config.max_connections + 1
    tenant(42).containers[3].image = "registry.example.com/app:99.9"
    tenant(101).containers[1].ports[2].protocol = "UDP"
    tenant(150).config.key_17 = nil
    tenant(200).config.debug = true
    table.remove(tenant(3).containers[5].env, 6)
  end
  return actual, expected
end

local function encode(v, out)
  local tv = type(v)
  if tv == "string" then out[#out + 1] = string.format("%q", v)
  elseif tv == "number" then out[#out + 1] = math.type(v) == "integer" and string.format("%d", v) or string.format("%.17g", v)
  elseif tv == "boolean" then out[#out + 1] = tostring(v)
  elseif #v > 0 then
    out[#out + 1] = "["
    for i, x in ipairs(v) do if i > 1 then out[#out + 1] = "," end encode(x, out) end
    out[#out + 1] = "]"
  else
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = string.format("%q:", k)
      encode(v[k], out)
    end
    out[#out + 1] = "}"
  end
end

function M.json(v)
  local out = {}
  encode(v, out)
  return table.concat(out)
end

if arg and arg[0] and arg[0]:match("drift_bench_gen%.lua$") then -- run as a script
  local leaves, fa, fb = tonumber(arg[1]) or 50000, arg[2] or "a.json", arg[3] or "b.json"
  local actual, expected = M.pair(leaves)
  for path, doc in pairs({ [fa] = actual, [fb] = expected }) do
    local f = assert(io.open(path, "w"))
    f:write(M.json(doc), "\n")
    f:close()
  end
end

return M
