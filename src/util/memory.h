/*
** memory.h — allocations with platform-specific hints, behind one named wrapper.
*/
#ifndef ANETRAIN_MEMORY_H
#define ANETRAIN_MEMORY_H

#include <stddef.h>

/* A 2 MiB-aligned allocation of at least `bytes`, advised to use transparent huge pages where
** the system offers them (Linux); elsewhere just aligned memory. For buffers streamed in full
** over and over (weights during decoding, the KV cache), where 4 KiB pages cost TLB misses.
** Release with free(). Returns NULL when out of memory. */
void *mem_alloc_huge(size_t bytes);

/* Bytes mem_alloc_huge reserves for a request of `bytes` (rounded up to 2 MiB). */
size_t mem_huge_size(size_t bytes);

/* Gives the whole pages inside [p, p + bytes) back to the system without freeing the allocation
** (Linux: madvise MADV_DONTNEED; elsewhere nothing). Their contents become undefined (zeros on
** Linux; touched again, they cost memory again). For parts of a buffer that will never be read
** again, e.g. the fp32 copies of matrices held as int8. Returns the bytes released. */
size_t mem_release_pages(void *p, size_t bytes);

#endif
