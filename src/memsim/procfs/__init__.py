"""The kernel's /proc and debugfs text formats, byte for byte, as pure functions."""
