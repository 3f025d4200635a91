/*
** memory.c — huge-page-friendly allocations (see memory.h).
*/
#include "memory.h"

#include <stdlib.h>
#include <stdint.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#define HUGE_PAGE ((size_t)2 << 20)

size_t mem_huge_size(size_t bytes) { return (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1); }

void *mem_alloc_huge(size_t bytes) {
    size_t rounded = mem_huge_size(bytes ? bytes : 1);
    void *p = NULL;
    if (posix_memalign(&p, HUGE_PAGE, rounded) != 0) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, rounded, MADV_HUGEPAGE); /* a hint: failure changes nothing */
#endif
    return p;
}

size_t mem_release_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_DONTNEED)
    long page_size = sysconf(_SC_PAGESIZE);
    if (page_size <= 0) return 0;
    uintptr_t page = (uintptr_t)page_size, begin = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + bytes) & ~(page - 1);
    if (end <= begin) return 0;
    if (madvise((void *)begin, end - begin, MADV_DONTNEED) != 0) return 0;
    return end - begin;
#else
    (void)p;
    (void)bytes;
    return 0;
#endif
}
