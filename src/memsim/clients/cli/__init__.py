"""The memsim command, with Linux habits (memsim up, cat /proc/buddyinfo, ...)."""
