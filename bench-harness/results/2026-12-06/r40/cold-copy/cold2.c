#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <immintrin.h>
#include <nmmintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static void nt_copy(char*d,const char*s,size_t n){
  // head: normal stores up to 32-byte alignment; body: 32-byte streaming stores; tail: normal
  size_t h=(32-((uintptr_t)d&31))&31; if(h>n)h=n; memcpy(d,s,h); d+=h;s+=h;n-=h;
  while(n>=32){ _mm256_stream_si256((__m256i*)d,_mm256_loadu_si256((const __m256i*)s)); d+=32;s+=32;n-=32; }
  memcpy(d,s,n);
}
static void nt_copy64(char*d,const char*s,size_t n){
  size_t h=(64-((uintptr_t)d&63))&63; if(h>n)h=n; memcpy(d,s,h); d+=h;s+=h;n-=h;
  while(n>=64){ __m256i a=_mm256_loadu_si256((const __m256i*)s), b=_mm256_loadu_si256((const __m256i*)(s+32));
    _mm256_stream_si256((__m256i*)d,a); _mm256_stream_si256((__m256i*)(d+32),b); d+=64;s+=64;n-=64; }
  memcpy(d,s,n);
}
static uint32_t crc(const char*p,size_t n){uint64_t c=~0u; while(n>=8){c=_mm_crc32_u64(c,*(const uint64_t*)p);p+=8;n-=8;} while(n--) c=_mm_crc32_u8(c,*p++); return c;}
int main(int argc,char**argv){
  int nq=atoi(argv[1]); int mode=atoi(argv[2]); size_t slot=atoi(argv[3]); size_t rec=1044; int per=slot/rec;
  char*mem=aligned_alloc(4096,(size_t)nq*slot); memset(mem,1,(size_t)nq*slot);
  char body[2048]; memset(body,7,2048);
  long N=10000000; size_t *fill=calloc(nq,sizeof(size_t)); volatile uint32_t sink=0;
  double t0=now();
  for(long i=0;i<N;i++){ int q=i%nq; size_t off=fill[q]; fill[q]=(off+1)%per;
    char*d=mem+(size_t)q*slot+off*rec;
    if(mode==0){ memcpy(d,body,rec); }
    else if(mode==1){ memcpy(d,body,rec); sink^=crc(d,rec); }
    else if(mode==2){ nt_copy(d,body,rec); }
    else if(mode==3){ nt_copy(d,body,rec); _mm_sfence(); }
    else if(mode==4){ nt_copy(d,body,rec); _mm_sfence(); sink^=crc(body,rec); }
    else if(mode==20){ nt_copy64(d,body,rec); }
    else if(mode==21){ nt_copy64(d,body,rec); _mm_sfence(); }
    else if(mode>=5){ int k=mode-4; int q2=(i+k)%nq; char*d2=mem+(size_t)q2*slot+fill[q2]*rec; for(size_t o=0;o<rec+64;o+=64) __builtin_prefetch(d2+o,1,3); memcpy(d,body,rec); }
    body[0]=i; }
  double t=now()-t0; printf("nq %d mode %d slot %zu: %.1f ns/msg\n",nq,mode,slot,t/N*1e9); return 0;}
