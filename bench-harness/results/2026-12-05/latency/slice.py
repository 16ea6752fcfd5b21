import ctypes, os, sys, struct
libc = ctypes.CDLL(None, use_errno=True)
SYS_sched_setattr = 314
pid = int(sys.argv[1]); slice_ns = int(sys.argv[2])
# struct sched_attr: u32 size, u32 policy, u64 flags, s32 nice, u32 prio, u64 runtime, deadline, period, u32 util_min, util_max
n=0
for tid in os.listdir(f"/proc/{pid}/task"):
    attr = struct.pack("IIQiIQQQII", 56, 0, 0, 0, 0, slice_ns, 0, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, 56)
    r = libc.syscall(SYS_sched_setattr, int(tid), buf, 0)
    if r != 0: print("tid", tid, "err", ctypes.get_errno()); 
    else: n+=1
print("set", n)
