"""The MMU service: processes, address spaces, page tables, demand paging and
page contents (mm/memory.c, mm/mmap.c, mm/mprotect.c of 2.6)."""
