-- required by 45-require-self.lua: requires itself
return require("self_mod")
