"""The money path: Lua scripts in Redis and the typed Python faces that call them."""
