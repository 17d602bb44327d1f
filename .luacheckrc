-- luacheck configuration: the Lua of this repository runs inside Redis (Lua 5.1), one script
-- per EVAL. Scripts are assembled from fragments by --#include (common/lua.py), so `make lint`
-- lints each script assembled (common/lua_check.py) and reports the fragments' own lines.
std = "lua51"
-- What Redis gives a script besides Lua 5.1's standard library.
read_globals = {"KEYS", "ARGV", "redis", "cjson", "cmsgpack", "bit", "struct"}
max_line_length = 100
