"""memsim: the Linux 2.6 memory manager taken apart into gRPC services."""
