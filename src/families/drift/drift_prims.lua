-- drift_compare and the iac loaders as audited primitives for the sandbox.
local host = require "rbl.host"
local prim = require "rbl.prim"
local json = require "rbl.json"
local drift = require "rbl.drift"
local iac = require "rbl.iac"

local M = {}

drift.configure { null = json.null, is_array = json.is_array }

function M.globals(book)
  local g = {}
  g.drift_compare = prim.define("drift_compare", {
    effect = function(call, actual, expected, opts)
      if type(actual) ~= "table" or type(expected) ~= "table" then
        host.raise("invalid", "drift_compare: actual and expected must be tables")
      end
      local ok, d = pcall(drift.compare, actual, expected, opts)
      if not ok then host.raise("invalid", tostring(d)) end -- the pure library raises plain text
      local items = d:report()
      book.note_drift(items)
      local critical = 0
      for _, it in ipairs(items) do if it.severity == "critical" then critical = critical + 1 end end
      return d, { items = #items, critical = critical, summary = #items > 0 and d:summary() or nil }
    end,
  })
  local function loader(name, fn)
    return prim.define("iac." .. name, {
      effect = function(call, ...)
        local v = fn(...)
        return v, { loaded = true }
      end,
    })
  end
  g.iac = { terraform = loader("terraform", iac.terraform), manifest = loader("manifest", iac.manifest),
    json = loader("json", iac.json), yaml = loader("yaml", iac.yaml) }
  return g
end

return M
