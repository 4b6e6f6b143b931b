#!/usr/bin/env python3
"""Which ELF sections of a binary a running process has resident, from /proc/PID/pagemap.

    bench/agent/rss_sections.py PID target/release/capstan

Prints the process's resident pages of its mappings of BIN, split into file-backed pages
(shared with the page cache: code, read-only data, relocation tables) and private copies
(pages the loader or the program wrote: .data.rel.ro after relocation, .got, .data), each by
section. Used for the agent's memory figures in BENCHMARKS.md. Needs readelf and permission to
read the process's pagemap (same user, or root).
"""
import os
import re
import struct
import subprocess
import sys

PAGE = 4096


def sections(path):
    """(name, address, size) of the allocated sections, from `readelf -S -W`."""
    out = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True, check=True)
    found = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m and int(m.group(2), 16) and int(m.group(3), 16):
            found.append((m.group(1), int(m.group(2), 16), int(m.group(3), 16)))
    return found


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pid, path = sys.argv[1], os.path.realpath(sys.argv[2])
    secs = sections(path)
    maps = []
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        if len(parts) >= 6 and os.path.realpath(parts[5]) == path:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            maps.append((lo, hi, int(parts[2], 16)))
    if not maps:
        sys.exit(f"process {pid} has no mapping of {path}")
    base = min(lo - off for lo, _, off in maps)
    file_pages, private_pages = {}, {}
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for lo, hi, _ in maps:
            pagemap.seek(lo // PAGE * 8)
            entries = pagemap.read((hi - lo) // PAGE * 8)
            for i in range(len(entries) // 8):
                entry = struct.unpack_from("<Q", entries, i * 8)[0]
                if not entry >> 63 & 1:  # not present
                    continue
                address = lo + i * PAGE - base
                name = next((n for n, a, s in secs if a // PAGE * PAGE <= address < a + s), "?")
                counts = file_pages if entry >> 61 & 1 else private_pages
                counts[name] = counts.get(name, 0) + 1
    mib = lambda pages: pages * PAGE / 2**20
    print(f"{path} in process {pid}: file-backed {mib(sum(file_pages.values())):.1f} MiB, "
          f"private copies {mib(sum(private_pages.values())):.1f} MiB")
    for kind, counts in (("file", file_pages), ("private", private_pages)):
        for name, pages in sorted(counts.items(), key=lambda kv: -kv[1]):
            if mib(pages) >= 0.01:
                print(f"  {kind:8s} {name:20s} {mib(pages):7.2f} MiB")


if __name__ == "__main__":
    main()
