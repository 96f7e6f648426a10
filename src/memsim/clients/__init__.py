"""Clients of the machine: the memsim command line, and later process players."""
