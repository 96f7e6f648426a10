"""The buddy allocator service: free_area lists per zone (mm/page_alloc.c)."""
