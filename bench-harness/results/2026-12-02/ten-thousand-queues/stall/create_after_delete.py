# Creating 10,000 files (one 4 KiB write each) on a fresh directory, then right after
# deleting 10,000 files: ext4's inode allocator skips recently deleted inodes.
import os, time, shutil
def mk(d, n):
    os.makedirs(d, exist_ok=True)
    t = time.time()
    for i in range(n):
        fd = os.open(f'{d}/f{i}', os.O_CREAT | os.O_WRONLY, 0o644)
        os.pwrite(fd, b'x' * 4096, (i % 16) * 4096)
        os.close(fd)
    return time.time() - t
print('fresh 10k', mk('/tmp/ct/a', 10000))
shutil.rmtree('/tmp/ct/a')
print('after delete 10k', mk('/tmp/ct/b', 10000))
shutil.rmtree('/tmp/ct/b')
print('after delete again', mk('/tmp/ct/c', 10000))
shutil.rmtree('/tmp/ct')
