import time,sys
def snap():
    d={}
    for l in open('/proc/stat'):
        if l.startswith('cpu') and l[3].isdigit():
            f=l.split(); d[f[0]]=list(map(int,f[1:9]))
    return d
out=open(sys.argv[1],'w')
prev=snap()
while True:
    time.sleep(0.5)
    cur=snap(); t=time.strftime('%H:%M:%S')
    parts=[]
    for c in sorted(cur):
        dd=[a-b for a,b in zip(cur[c],prev[c])]; tot=sum(dd) or 1
        # user nice system idle iowait irq softirq steal
        parts.append("%s usr%3d sys%3d idle%3d iow%3d si%3d"%(c,100*(dd[0]+dd[1])//tot,100*dd[2]//tot,100*dd[3]//tot,100*dd[4]//tot,100*(dd[5]+dd[6])//tot))
    out.write(t+' '+' | '.join(parts)+'\n'); out.flush()
    prev=cur
