#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <stdatomic.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int nq=atoi(argv[1]); int mode=atoi(argv[2]); size_t slot=atoi(argv[3]); int per=slot/1024;
  char*mem=aligned_alloc(4096,(size_t)nq*slot); memset(mem,1,(size_t)nq*slot);
  _Atomic long *cnt=aligned_alloc(64,(size_t)nq*64); memset((void*)cnt,0,(size_t)nq*64);
  char body[1024]; memset(body,7,1024); _Atomic long lk=0;
  long N=20000000; size_t *fill=calloc(nq,sizeof(size_t));
  double t0=now();
  for(long i=0;i<N;i++){ int q=i%nq; size_t off=fill[q]; fill[q]=(off+1)%per;
    if(mode>=1) atomic_fetch_add(&lk,1);
    memcpy(mem+(size_t)q*slot+off*1024,body,1024);
    if(mode>=2) atomic_fetch_add(&cnt[q*8],1);
    if(mode>=1) atomic_fetch_add(&lk,1);
    body[0]=i; }
  double t=now()-t0; printf("nq %d mode %d slot %zu: %.1f ns/msg\n",nq,mode,slot,t/N*1e9); return 0;}
