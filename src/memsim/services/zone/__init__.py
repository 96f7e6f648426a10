"""The zone allocator service: GFP flags to zonelists, watermarks, per-CPU page
lists, kswapd and direct reclaim (mm/page_alloc.c and mm/vmscan.c of 2.6.24)."""
