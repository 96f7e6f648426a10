"""CONFIG_DEBUG_SLAB's checks (mm/slab.c of 2.6.24), for the caches that ask
for them with SLAB_POISON, SLAB_RED_ZONE or SLAB_STORE_USER.

Poison: a free object is filled with POISON_FREE (0x6b) ending in POISON_END
(0xa5); allocation checks the pattern (check_poison_obj: a write after free
shows up as "Slab corruption: ..." with a hex dump of the damaged lines and
of the neighbouring objects) and refills it with POISON_INUSE (0x5a).
Red zone: a 64-bit word before and after the object reads RED_ACTIVE while
it is allocated and RED_INACTIVE while free; a free that finds anything else
reports "memory outside object was overwritten" (a write past the end), or
"double free detected" if both words say the object was already free.

The messages are the kernel's printk lines, word for word; dump_stack()'s
backtrace is left out. %p prints 2*sizeof(void *) zero-padded hex digits.
"""

from __future__ import annotations

from dataclasses import dataclass

from memsim.services.slab import flags as f
from memsim.services.slab.constructors import ByteOrder
from memsim.services.slab.estimate import REDZONE_BYTES, CacheLayout
from memsim.services.slab.klog import KernelLog

# include/linux/poison.h
RED_INACTIVE = 0x09F911029D74E35B
RED_ACTIVE = 0xD84156C5635688C0
POISON_INUSE = 0x5A
POISON_FREE = 0x6B
POISON_END = 0xA5


@dataclass(frozen=True)
class DebugEnv:
    """What the checks need to know about the cache and the machine."""

    name: str
    layout: CacheLayout
    byteorder: ByteOrder
    x86: bool  # CONFIG_X86: which memory test dump_line recommends
    log: KernelLog

    def ptr(self, addr: int) -> str:
        return f"{addr:0{2 * self.layout.word_bytes}x}"

    def slab_error(self, function: str, msg: str) -> None:
        self.log.printk(f"slab error in {function}(): cache `{self.name}': {msg}")

    # -- poison ----------------------------------------------------------------

    def poison(self, mem: bytearray, objoff: int, val: int) -> None:
        """poison_obj: obj_size bytes of val, the last one POISON_END."""
        start = objoff + self.layout.obj_offset
        size = self.layout.obj_size
        mem[start : start + size - 1] = bytes((val,)) * (size - 1)
        mem[start + size - 1] = POISON_END

    def poisoned(self, mem: bytearray, objoff: int) -> bool:
        start = objoff + self.layout.obj_offset
        size = self.layout.obj_size
        return mem[start : start + size] == bytes((POISON_FREE,)) * (size - 1) + bytes(
            (POISON_END,)
        )

    def dump_line(self, data: bytes | bytearray, offset: int, limit: int) -> None:
        chunk = data[offset : offset + limit]
        self.log.printk(f"{offset:03x}:" + "".join(f" {b:02x}" for b in chunk))
        bad = [b for b in chunk if b != POISON_FREE]
        if len(bad) == 1:
            error = bad[0] ^ POISON_FREE
            if not error & (error - 1):
                self.log.printk("Single bit error detected. Probably bad RAM.")
                if self.x86:
                    self.log.printk("Run memtest86+ or a similar memory test tool.")
                else:
                    self.log.printk("Run a memory test tool.")

    def print_objinfo(self, mem: bytearray, objoff: int, lines: int) -> None:
        layout = self.layout
        if layout.flags & f.SLAB_RED_ZONE:
            r1, r2 = self.redzones(mem, objoff)
            self.log.printk(f"Redzone: 0x{r1:x}/0x{r2:x}.")
        if layout.flags & f.SLAB_STORE_USER:
            user = self.userword(mem, objoff)
            # print_symbol falls back to the bare address: no kallsyms here.
            self.log.printk(f"Last user: [<{self.ptr(user)}>](0x{user:x})")
        start = objoff + layout.obj_offset
        realobj = mem[start : start + layout.obj_size]
        for i in range(0, min(layout.obj_size, 16 * lines), 16):
            self.dump_line(realobj, i, min(16, layout.obj_size - i))

    def check_poison_obj(
        self, mem: bytearray, base: int, s_mem_off: int, index: int, num: int
    ) -> bool:
        """Reports a damaged poison pattern; True if it did."""
        layout = self.layout
        objoff = s_mem_off + index * layout.buffer_size
        if self.poisoned(mem, objoff):
            return False
        start = objoff + layout.obj_offset
        size = layout.obj_size
        realobj = mem[start : start + size]
        lines = 0
        i = 0
        while i < size:
            exp = POISON_END if i == size - 1 else POISON_FREE
            if realobj[i] != exp:
                if lines == 0:
                    self.log.printk(
                        f"Slab corruption: {self.name} start={self.ptr(base + start)}, len={size}"
                    )
                    self.print_objinfo(mem, objoff, 0)
                i = (i // 16) * 16
                self.dump_line(realobj, i, min(16, size - i))
                # The kernel's loop adds 16 and then its own i++: the first
                # byte of the next line goes unchecked.
                i += 16
                lines += 1
                if lines > 5:
                    break
            i += 1
        for label, neighbour in (("Prev", index - 1), ("Next", index + 1)):
            if lines and 0 <= neighbour < num:
                noff = s_mem_off + neighbour * layout.buffer_size
                self.log.printk(
                    f"{label} obj: start={self.ptr(base + noff + layout.obj_offset)}, len={size}"
                )
                self.print_objinfo(mem, noff, 2)
        return lines != 0

    # -- red zones and the user word --------------------------------------------

    def redzones(self, mem: bytearray, objoff: int) -> tuple[int, int]:
        r1 = objoff + self.layout.redzone1
        r2 = objoff + self.layout.redzone2
        return (
            int.from_bytes(mem[r1 : r1 + REDZONE_BYTES], self.byteorder),
            int.from_bytes(mem[r2 : r2 + REDZONE_BYTES], self.byteorder),
        )

    def set_redzones(self, mem: bytearray, objoff: int, value: int) -> None:
        word = value.to_bytes(REDZONE_BYTES, self.byteorder)
        r1 = objoff + self.layout.redzone1
        r2 = objoff + self.layout.redzone2
        mem[r1 : r1 + REDZONE_BYTES] = word
        mem[r2 : r2 + REDZONE_BYTES] = word

    def userword(self, mem: bytearray, objoff: int) -> int:
        at = objoff + self.layout.userword
        return int.from_bytes(mem[at : at + self.layout.word_bytes], self.byteorder)

    def set_userword(self, mem: bytearray, objoff: int, caller: int) -> None:
        w = self.layout.word_bytes
        at = objoff + self.layout.userword
        mem[at : at + w] = (caller & ((1 << (8 * w)) - 1)).to_bytes(w, self.byteorder)

    def verify_redzone_free(self, mem: bytearray, base: int, objoff: int) -> bool:
        """On free: both words must read RED_ACTIVE. True if it reported."""
        r1, r2 = self.redzones(mem, objoff)
        if r1 == RED_ACTIVE and r2 == RED_ACTIVE:
            return False
        if r1 == RED_INACTIVE and r2 == RED_INACTIVE:
            self.slab_error("verify_redzone_free", "double free detected")
        else:
            self.slab_error("verify_redzone_free", "memory outside object was overwritten")
        self.log.printk(f"{self.ptr(base + objoff)}: redzone 1:0x{r1:x}, redzone 2:0x{r2:x}.")
        return True

    def check_redzone_alloc(self, mem: bytearray, base: int, objoff: int) -> bool:
        """On allocation: both words must read RED_INACTIVE."""
        r1, r2 = self.redzones(mem, objoff)
        if r1 == RED_INACTIVE and r2 == RED_INACTIVE:
            return False
        self.slab_error(
            "cache_alloc_debugcheck_after",
            "double free, or memory outside object was overwritten",
        )
        self.log.printk(f"{self.ptr(base + objoff)}: redzone 1:0x{r1:x}, redzone 2:0x{r2:x}")
        return True

    def check_redzone_destroy(self, mem: bytearray, objoff: int) -> int:
        """slab_destroy_objs: a free object's words must still be RED_INACTIVE."""
        r1, r2 = self.redzones(mem, objoff)
        reports = 0
        if r1 != RED_INACTIVE:
            self.slab_error("slab_destroy_objs", "start of a freed object was overwritten")
            reports += 1
        if r2 != RED_INACTIVE:
            self.slab_error("slab_destroy_objs", "end of a freed object was overwritten")
            reports += 1
        return reports
