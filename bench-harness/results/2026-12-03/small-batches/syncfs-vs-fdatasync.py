# 10,000 files in the current directory (run it in an empty directory on the disk under test):
# a 4 KiB O_DIRECT write to each, then an fdatasync of each one at a time against one syncfs
# after the same writes (new blocks appended, and overwrites). python3 syncfs-vs-fdatasync.py
import os, mmap, time, ctypes, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
N = 10000
buf = mmap.mmap(-1, 4096); buf.write(b"x"*4096)
def write_all(off):
    fds = []
    t = time.time()
    for i in range(N):
        fd = os.open(f"f{i}.qidx", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
        os.pwritev(fd, [buf], off)
        fds.append(fd)
    return fds, time.time() - t
fds, w = write_all(0)
t = time.time(); [os.fdatasync(fd) for fd in fds]; s1 = time.time() - t
print(f"create+write {w:.2f}s, fdatasync each (new files) {s1:.2f}s")
for off in (4096, 8192):
    for fd in fds: os.pwritev(fd, [buf], off)
    t = time.time(); [os.fdatasync(fd) for fd in fds]; s1 = time.time() - t
    for fd in fds: os.pwritev(fd, [buf], off + 16384)
    d = os.open(".", os.O_RDONLY)
    t = time.time(); r = libc.syncfs(d); s2 = time.time() - t
    print(f"append block at {off}: fdatasync each {s1:.2f}s; syncfs {s2:.3f}s (rc {r})")
    os.close(d)
# overwrite in place (no allocation)
for fd in fds: os.pwritev(fd, [buf], 0)
t = time.time(); [os.fdatasync(fd) for fd in fds]; s1 = time.time() - t
for fd in fds: os.pwritev(fd, [buf], 0)
d = os.open(".", os.O_RDONLY); t = time.time(); libc.syncfs(d); s2 = time.time() - t
print(f"overwrite: fdatasync each {s1:.2f}s; syncfs {s2:.3f}s")
